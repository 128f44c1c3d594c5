"""The pure pricing core: a UsageEvent in, a Decimal cost with its per-class components out.

No I/O, no clock, no environment: the price book is built from the config and the overrides
file (both read at the edge), and every event is priced at its own ``started_at``.

* Proprietary models: overrides first (aliases, fixed ``prices``), else the genai-prices list
  price (pinned package version), then negotiated and batch discounts from the overrides.
* Self-hosted backends: the GPU cost period in force, by GPU-seconds when the backend reported
  them, else by sustained throughput (see :mod:`aimeter.pricer.gpu`); plus what the same tokens
  would have cost on the backend's reference proprietary model (the savings basis).
* Unknown models are never $0: cost is None and the status says ``unpriced``.
* A 2xx answer whose usage could not be read (``usage_source=none``, no tokens) is never $0 either: cost
  is None and the status says ``unmetered``. A failed attempt with no usage is a true $0 (nothing billed).
* A model route may say what it is priced as (``priced_as: {provider, model}``), e.g. an Azure deployment
  name priced as the OpenAI model it deploys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from aimeter.config import Backend, GatewayConfig
from aimeter.events import Deployment, TokenUsage, UsageEvent
from aimeter.pricer import gpu as gpu_pricing
from aimeter.pricer.listprice import GENAI_PRICES_VERSION, list_price
from aimeter.pricer.overrides import EMPTY, Overrides
from aimeter.pricer.rates import Components, RateCard, UsageCounts, apply_card, money

PRICED = "priced"
UNPRICED = "unpriced"
UNMETERED = "unmetered"  # a 2xx answer whose usage could not be read: no cost, counted like unpriced
NOT_PRICED = (UNPRICED, UNMETERED)
LIST = "list"
OVERRIDE = "override"
__all__ = ["GENAI_PRICES_VERSION", "NOT_PRICED", "PRICED", "UNMETERED", "UNPRICED", "PriceBook", "Priced", "money"]


@dataclass(frozen=True, slots=True)
class Priced:
    """One event's price. ``components`` add up exactly to ``cost_usd``; both are None when unpriced."""

    cost_usd: Decimal | None
    components: Components | None
    reference_cost_usd: Decimal | None
    pricing_status: str
    price_source: str
    price_version: str
    cost_basis: str = ""
    note: str = ""

    @property
    def input_cost_usd(self) -> Decimal | None:
        return None if self.components is None else self.components.input

    @property
    def output_cost_usd(self) -> Decimal | None:
        return None if self.components is None else self.components.output


@dataclass(frozen=True, slots=True)
class Quote:
    """The rates found for a model before discounts, and the names discounts may match on."""

    card: RateCard
    source: str
    basis: str
    provider: str
    names: tuple[str, ...]
    batch_priced: bool = False


@dataclass(frozen=True, slots=True)
class Adjusted:
    card: RateCard
    labels: list[str] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Resolved:
    """A model's rates at one moment with discounts applied: a price, less the usage it is applied to."""

    quote: Quote
    adjusted: Adjusted

    @property
    def card(self) -> RateCard:
        return self.adjusted.card

    def source(self, tier: int | None) -> str:
        """The row's price_source: where the rates came from, the long-context tier used, the discounts."""
        return " ".join([self.quote.source, *([] if tier is None else [f"tier>{tier}"]), *self.adjusted.labels])


def is_unmetered(http_status: int, usage_source: str, usage: TokenUsage, status: str = "ok") -> bool:
    """The upstream answered 2xx, so it will bill, but the gateway could read no usage from the answer.

    Not a 200 stream that carried only the provider's error (status ``upstream_error``): nothing was billed."""
    # Every other token class is a subset of input_tokens or output_tokens.
    return (200 <= http_status < 300 and usage_source == "none" and status != "upstream_error"
            and not (usage.input_tokens or usage.output_tokens))


# Every event field PriceBook.price reads. The tariff memo (tariff.RouteKey) is keyed by PRICE_KEY_INPUTS, so
# events alike in those share one price; PER_EVENT_INPUTS are the ones each event's charge is computed from.
# A price rule that reads another field must be listed here, and then the memo key must carry it (tariff.py
# refuses to import otherwise; tests/unit/test_pricer_route_key.py checks price() reads no other field).
PRICE_KEY_INPUTS = frozenset({"deployment", "backend", "provider", "model_requested", "model_served", "api",
                              "attribution.tags.batch", "started_at"})
PER_EVENT_INPUTS = frozenset({"usage", "backend_compute_seconds", "http_status", "usage_source", "status"})


def is_batch(event: UsageEvent) -> bool:
    """Batch-API traffic: an ``api`` ending in ``.batch``, or the attribution tag ``batch=true``."""
    return batch_traffic(event.api, event.attribution.tags.get("batch"))


def batch_traffic(api: str, batch_tag: str | None) -> bool:
    """:func:`is_batch` from the two values it reads (the pricer's tariff memo is keyed by them)."""
    return api.endswith(".batch") or (batch_tag or "").lower() == "true"


class PriceBook:
    """Prices events against one gateway config, one overrides file and the pinned genai-prices snapshot."""

    def __init__(self, config: GatewayConfig, overrides: Overrides = EMPTY) -> None:
        self.config = config
        self.overrides = overrides
        self.version = "; ".join(v for v in (GENAI_PRICES_VERSION, overrides.label) if v)
        # Memos derived from this (immutable) book, e.g. the pricer's tariffs (aimeter.pricer.tariff).
        self.memo: dict[str, Any] = {}

    def price(self, event: UsageEvent) -> Priced:
        if is_unmetered(event.http_status, event.usage_source, event.usage, event.status):
            return self.unmetered(event.model_served or event.model_requested)
        backend = self.config.backends.get(event.backend)
        if event.deployment is Deployment.SELF_HOSTED:
            return self._self_hosted(event, backend)
        provider, names = self.price_names(event.provider, event.model_requested, event.model_served)
        return self.price_tokens(event.usage, provider, names, event.started_at, batch=is_batch(event))

    def model_names(self, requested: str, served: str) -> tuple[str, ...]:
        """Names to look a price up by, best first: what was served, the configured upstream name, the request."""
        route = self.config.models.get(requested)
        upstream = route.upstream_model if route else None
        return tuple(dict.fromkeys(m for m in (served, upstream, requested) if m))

    def price_names(self, provider: str, requested: str, served: str) -> tuple[str, tuple[str, ...]]:
        """The provider and names a proprietary request is priced by: the route's ``priced_as`` when it says
        (an Azure deployment ``gpt-4o-prod`` priced as openai/gpt-4o), else its own provider and names."""
        route = self.config.models.get(requested)
        if route is not None and route.priced_as is not None:
            return route.priced_as.provider, (route.priced_as.model,)
        return provider, self.model_names(requested, served)

    def unmetered(self, model: str) -> Priced:
        return Priced(None, None, None, UNMETERED, "none", self.version, "",
                      f"{model or '<no model>'}: 2xx answer without readable usage (usage_source=none); the provider "
                      "billed tokens we could not count")

    def price_tokens(self, usage: TokenUsage, provider: str, names: tuple[str, ...], at: datetime, *,
                     batch: bool = False) -> Priced:
        """Price ``usage`` on the first of ``names`` anyone has a price for, as of ``at``."""
        found = self.resolve(provider, names, at, batch=batch)
        return found if isinstance(found, Priced) else self.charge(usage, found)

    def resolve(self, provider: str, names: tuple[str, ...], at: datetime, *, batch: bool = False) -> Resolved | Priced:
        """Everything about a price that does not depend on the usage: the rates in force at ``at``, discounts
        applied, and what to call them; or the unpriced row when nobody prices any of ``names``.

        Split from :meth:`charge` so the pricer can resolve once per model and minute and reuse it for
        thousands of events (:mod:`aimeter.pricer.tariff`); the result is the same as resolving per event.
        """
        for name in names:
            quote = self._quote(provider, name, at, batch)
            if quote is not None:
                return Resolved(quote, self._adjust(quote, provider, at, batch))
        tried = " or ".join(names) or "<no model>"
        return self._unpriced("none", f"no price for {provider}/{tried} in genai-prices or the price overrides")

    def _quote(self, provider: str, name: str, at: datetime, batch: bool) -> Quote | None:
        mapped_provider, model = provider, name
        alias = self.overrides.alias(provider, name)
        if alias is not None:
            mapped_provider, model, _ = alias
        names = tuple(dict.fromkeys((name, model)))
        rule = self.overrides.price_rule(mapped_provider, names, at)
        if rule is not None:
            source = f"overrides line {rule.line}: {mapped_provider}/{model}"
            return Quote(rule.card(), source, OVERRIDE, mapped_provider, names)
        own_batch_rule = batch and self.overrides.batch_discount(mapped_provider, names, at) is not None
        found = list_price(mapped_provider, model, at, batch=batch and not own_batch_rule)
        if found is None:
            return None
        source = f"genai-prices:{found.provider_id}/{found.model_id}" + (" batch" if found.batch else "")
        return Quote(found.card, source, LIST, mapped_provider, (*names, found.model_id), found.batch)

    def _adjust(self, quote: Quote, provider: str, at: datetime, batch: bool) -> Adjusted:
        """Negotiated discount (list prices only: a fixed rate is already what you pay), then batch."""
        factor, labels, note = Decimal(1), [], ""
        providers = tuple(dict.fromkeys((provider, quote.provider)))
        if quote.basis == LIST:
            found = next((d for p in providers if (d := self.overrides.discount(p, quote.names, at))), None)
            if found is not None:
                factor *= found.factor
                labels.append(f"-{found.percent}% (overrides line {found.line})")
        if batch and not quote.batch_priced:
            rule = next((d for p in providers if (d := self.overrides.batch_discount(p, quote.names, at))), None)
            if rule is not None:
                factor *= rule.factor
                labels.append(f"batch -{rule.percent}% (overrides line {rule.line})")
            else:
                note = "batch request: no batch price known, charged the standard rate"
        card = quote.card if factor == 1 else quote.card.scaled(factor)
        return Adjusted(card, labels, note)

    def charge(self, usage: UsageCounts, resolved: Resolved) -> Priced:
        costed = apply_card(usage, resolved.card)
        return self.charged(resolved, costed.components, costed.tier, costed.missing)

    def charged(self, resolved: Resolved, components: Components, tier: int | None,
                missing: tuple[str, ...]) -> Priced:
        """The row for a costed usage: priced, or unpriced when a class with tokens has no rate."""
        source = resolved.source(tier)
        if missing:
            return self._unpriced(source, f"{resolved.quote.source} has no rate for {', '.join(missing)} tokens")
        return Priced(components.total, components, None, PRICED, source, self.version, resolved.quote.basis,
                      resolved.adjusted.note)

    def _self_hosted(self, event: UsageEvent, backend: Backend | None) -> Priced:
        if backend is None or not backend.gpu_periods:
            return self.no_gpu_cost(event.backend)
        period = backend.gpu_at(event.started_at)
        if period is None:
            when = f"{event.started_at:%Y-%m-%d %H:%M:%S} UTC"
            return self._unpriced("gpu", f"self-hosted backend {event.backend!r} has no GPU cost period covering "
                                         f"{when}")
        if event.backend_compute_seconds is not None:
            basis = gpu_pricing.GPU_SECONDS
            components = gpu_pricing.by_gpu_seconds(event.usage, event.backend_compute_seconds, period)
        else:
            basis = gpu_pricing.THROUGHPUT
            components = gpu_pricing.by_throughput(event.usage, period)
        reference = None
        if backend.reference_model is not None:
            ref = backend.reference_model
            reference = self.price_tokens(event.usage, ref.provider, (ref.model,), event.started_at).cost_usd
        return Priced(components.total, components, reference, PRICED, gpu_pricing.describe(period, basis),
                      self.version, basis)

    def no_gpu_cost(self, backend: str) -> Priced:
        return self._unpriced("gpu", f"self-hosted backend {backend!r} has no GPU cost in the config")

    def _unpriced(self, source: str, note: str) -> Priced:
        return Priced(None, None, None, UNPRICED, source, self.version, "", note)
