"""The pure pricing core: a UsageEvent in, a Decimal cost with its per-class components out.

No I/O, no clock, no environment: the price book is built from the config and the overrides
file (both read at the edge), and every event is priced at its own ``started_at``.

* Proprietary models: overrides first (aliases, fixed ``prices``), else the genai-prices list
  price (pinned package version), then negotiated and batch discounts from the overrides.
* Self-hosted backends: the GPU cost period in force, by GPU-seconds when the backend reported
  them, else by sustained throughput (see :mod:`aimeter.pricer.gpu`); plus what the same tokens
  would have cost on the backend's reference proprietary model (the savings basis).
* Unknown models are never $0: cost is None and the status says ``unpriced``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from aimeter.config import Backend, GatewayConfig
from aimeter.events import Deployment, TokenUsage, UsageEvent
from aimeter.pricer import gpu as gpu_pricing
from aimeter.pricer.listprice import GENAI_PRICES_VERSION, list_price
from aimeter.pricer.overrides import EMPTY, Overrides
from aimeter.pricer.rates import Components, RateCard, apply_card, money

PRICED = "priced"
UNPRICED = "unpriced"
LIST = "list"
OVERRIDE = "override"
__all__ = ["GENAI_PRICES_VERSION", "PRICED", "UNPRICED", "PriceBook", "Priced", "money"]


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


def is_batch(event: UsageEvent) -> bool:
    """Batch-API traffic: an ``api`` ending in ``.batch``, or the attribution tag ``batch=true``."""
    return event.api.endswith(".batch") or event.attribution.tags.get("batch", "").lower() == "true"


class PriceBook:
    """Prices events against one gateway config, one overrides file and the pinned genai-prices snapshot."""

    def __init__(self, config: GatewayConfig, overrides: Overrides = EMPTY) -> None:
        self.config = config
        self.overrides = overrides
        self.version = "; ".join(v for v in (GENAI_PRICES_VERSION, overrides.label) if v)

    def price(self, event: UsageEvent) -> Priced:
        backend = self.config.backends.get(event.backend)
        if event.deployment is Deployment.SELF_HOSTED:
            return self._self_hosted(event, backend)
        route = self.config.models.get(event.model_requested)
        upstream = route.upstream_model if route else None
        names = tuple(dict.fromkeys(m for m in (event.model_served, upstream, event.model_requested) if m))
        return self.price_tokens(event.usage, event.provider, names, event.started_at, batch=is_batch(event))

    def price_tokens(self, usage: TokenUsage, provider: str, names: tuple[str, ...], at: datetime, *,
                     batch: bool = False) -> Priced:
        """Price ``usage`` on the first of ``names`` anyone has a price for, as of ``at``."""
        for name in names:
            quote = self._quote(provider, name, at, batch)
            if quote is not None:
                return self._charge(usage, quote, provider, at, batch)
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

    def _charge(self, usage: TokenUsage, quote: Quote, provider: str, at: datetime, batch: bool) -> Priced:
        adjusted = self._adjust(quote, provider, at, batch)
        costed = apply_card(usage, adjusted.card)
        tier = [] if costed.tier is None else [f"tier>{costed.tier}"]
        source = " ".join([quote.source, *tier, *adjusted.labels])
        if costed.missing:
            return self._unpriced(source, f"{quote.source} has no rate for {', '.join(costed.missing)} tokens")
        components = costed.components
        return Priced(components.total, components, None, PRICED, source, self.version, quote.basis, adjusted.note)

    def _self_hosted(self, event: UsageEvent, backend: Backend | None) -> Priced:
        if backend is None or not backend.gpu_periods:
            return self._unpriced("gpu", f"self-hosted backend {event.backend!r} has no GPU cost in the config")
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

    def _unpriced(self, source: str, note: str) -> Priced:
        return Priced(None, None, None, UNPRICED, source, self.version, "", note)
