"""The price overrides file, as a model: what genai-prices lacks, and what you negotiated. Pure.

``schemas/price_overrides.yaml`` (or the config's ``price_overrides`` path) has four lists;
every entry names a ``provider`` (as in the event, i.e. the backend's ``provider``) and,
optionally, a ``model`` glob (``gpt-4o*``; case-insensitive; omitted = every model):

* ``aliases``: price a provider's names as a genai-prices model (Azure deployments, Bedrock
  and Vertex ids), ``price_as: {provider: openai, model: gpt-4o}``.
* ``prices``: USD per 1M tokens per class, for models genai-prices does not know or fixed
  negotiated rates. They win over genai-prices and are charged as written.
* ``discounts``: a negotiated percentage off the genai-prices list price.
* ``batch``: the batch-API percentage off (list price or ``prices`` rate).

Dated entries carry ``effective_from`` (inclusive) and ``effective_to`` (exclusive), dates
meaning midnight UTC. For one event, the first matching entry in file order wins, and a
``discounts``/``batch`` entry naming a model wins over one naming only the provider.
"""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from aimeter.config import UtcInstant
from aimeter.pricer.rates import RATE_KEYS, Rate, RateCard

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
PerMillion = Annotated[Decimal, Field(ge=0, max_digits=24, decimal_places=12)]


class Entry(BaseModel):
    """One list item; remembers its line in the file so a priced row can name the rule that priced it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _line: int = PrivateAttr(0)

    @property
    def line(self) -> int:
        return self._line

    def at_line(self, line: int) -> Entry:
        self._line = line
        return self


class Selector(Entry):
    provider: str = Field(min_length=1)
    model: str | None = Field(None, min_length=1, description="Glob on the model name; omitted = every model.")

    def matches(self, provider: str, models: tuple[str, ...]) -> bool:
        if provider.lower() != self.provider.lower():
            return False
        return self.model is None or any(fnmatch.fnmatchcase(m.lower(), self.model.lower()) for m in models if m)


class Dated(Selector):
    effective_from: UtcInstant | None = None
    effective_to: UtcInstant | None = None

    @field_validator("effective_to")
    @classmethod
    def _after_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        """A field check (not a model check) so it is reported together with the entry's other errors."""
        start = info.data.get("effective_from")
        if value is not None and start is not None and value <= start:
            raise ValueError(f"effective_to must be after effective_from ({start:%Y-%m-%d %H:%M})")
        return value

    def active(self, at: datetime) -> bool:
        return (self.effective_from is None or self.effective_from <= at) and (
            self.effective_to is None or at < self.effective_to
        )

    def span(self) -> tuple[datetime, datetime]:
        return self.effective_from or EARLIEST, self.effective_to or LATEST

    def overlaps(self, other: Dated) -> bool:
        (start, end), (other_start, other_end) = self.span(), other.span()
        return start < other_end and other_start < end


class Rates(BaseModel):
    """USD per 1M tokens per class (see :data:`aimeter.pricer.rates.RATE_KEYS`), and a fee per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: PerMillion | None = None
    cache_read: PerMillion | None = None
    cache_write: PerMillion | None = None
    cache_write_5m: PerMillion | None = None
    cache_write_1h: PerMillion | None = None
    input_audio: PerMillion | None = None
    input_image: PerMillion | None = None
    output: PerMillion | None = None
    reasoning: PerMillion | None = None
    output_audio: PerMillion | None = None
    output_image: PerMillion | None = None
    per_request: Annotated[Decimal, Field(ge=0, max_digits=24, decimal_places=12)] | None = None

    def given(self) -> dict[str, Decimal]:
        return {k: v for k in RATE_KEYS if (v := getattr(self, k)) is not None}


class Tier(Rates):
    """Rates that replace the base rates when the prompt exceeds ``above_input_tokens`` (the cliff rule)."""

    above_input_tokens: int = Field(gt=0)


class PriceRule(Dated, Rates):
    tiers: list[Tier] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_rates(self) -> PriceRule:
        if not self.given() and self.per_request is None:
            raise ValueError("a prices entry needs at least one rate (input, output, … in USD per 1M tokens)")
        for tier in self.tiers:
            extra = set(tier.given()) - set(self.given())
            if extra:
                raise ValueError(f"tier above {tier.above_input_tokens} prices {sorted(extra)} with no base rate")
        return self

    def card(self) -> RateCard:
        tiers = sorted(self.tiers, key=lambda t: t.above_input_tokens)
        rates = {
            key: Rate(base, tuple((t.above_input_tokens, t.given()[key]) for t in tiers if key in t.given()))
            for key, base in self.given().items()
        }
        return RateCard(rates, self.per_request or Decimal(0))


class Discount(Dated):
    percent: Decimal = Field(gt=0, le=100, decimal_places=6)

    @property
    def factor(self) -> Decimal:
        return 1 - self.percent / 100


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1)
    model: str | None = Field(None, min_length=1, description="Omitted: keep the event's model name.")


class Alias(Selector):
    price_as: Target


class Overrides(BaseModel):
    """The whole file. ``sha256`` is set by the loader and recorded in every row's price version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field("none", min_length=1, description="Your label for this revision of the file.")
    aliases: list[Alias] = Field(default_factory=list)
    prices: list[PriceRule] = Field(default_factory=list)
    discounts: list[Discount] = Field(default_factory=list)
    batch: list[Discount] = Field(default_factory=list)
    _sha256: str = PrivateAttr("")

    @property
    def label(self) -> str:
        """What a priced row records about this file: the version label and a content hash."""
        return f"overrides={self.version}@{self._sha256[:12]}" if self._sha256 else ""

    def with_hash(self, sha256: str) -> Overrides:
        self._sha256 = sha256
        return self

    def alias(self, provider: str, model: str) -> tuple[str, str, Alias] | None:
        found = next((a for a in self.aliases if a.matches(provider, (model,))), None)
        if found is None:
            return None
        return found.price_as.provider, found.price_as.model or model, found

    def price_rule(self, provider: str, models: tuple[str, ...], at: datetime) -> PriceRule | None:
        return next((p for p in self.prices if p.active(at) and p.matches(provider, models)), None)

    def discount(self, provider: str, models: tuple[str, ...], at: datetime) -> Discount | None:
        return most_specific(self.discounts, provider, models, at)

    def batch_discount(self, provider: str, models: tuple[str, ...], at: datetime) -> Discount | None:
        return most_specific(self.batch, provider, models, at)


def most_specific(rules: list[Discount], provider: str, models: tuple[str, ...], at: datetime) -> Discount | None:
    """A rule naming the model beats one naming only the provider; otherwise file order decides."""
    active = [r for r in rules if r.active(at) and r.matches(provider, models)]
    return next((r for r in active if r.model is not None), None) or next(iter(active), None)


EMPTY = Overrides()
