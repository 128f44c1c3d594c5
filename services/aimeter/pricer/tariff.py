"""Memoized prices for the ingest hot path: resolve a model's rates once per minute, then charge each event
with integer arithmetic. Pure (the memo lives on the :class:`PriceBook`; nothing reads a clock).

Why: resolving a price (alias, overrides, genai-prices lookup, discounts) costs far more than charging one
(docs/decisions.md), and a batch of 5,000 events has a handful of distinct (model, minute) pairs. Everything
that can change a price at a moment (genai-prices start dates and off-peak hours, overrides and GPU periods
with their effective dates) changes on a whole minute, which :func:`minute_windows` checks for the loaded
book; so every event of one minute shares one resolution. Where some boundary is not on a whole minute, the
window is the event's exact instant (correct, only slower).

A tariff is built *from* the reference: ``PriceBook.resolve`` gives the card, ``PriceBook.charged`` the
row's texts; only the per-class multiplication is redone, in integer units (:mod:`.unitmath` says why it
is exact). Anything the integers cannot do for sure raises :class:`Defer`, and the caller prices that
event by the reference path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from datetime import UTC, datetime
from operator import mul
from typing import Any, NamedTuple, cast

from genai_prices import data_snapshot
from genai_prices.types import TimeOfDateConstraint

from aimeter.config import Backend
from aimeter.pricer import gpu as gpu_pricing
from aimeter.pricer.pricebook import PRICE_KEY_INPUTS, PRICED, PriceBook, Priced, Resolved, batch_traffic
from aimeter.pricer.rates import CLASSES, TOKEN_CLASSES, Components, UsageCounts, class_count_tuple, money
from aimeter.pricer.unitmath import (
    InexactError,
    list_rate,
    round_half_even,
    safe_tokens,
    throughput_rate,
    units,
)

MAX_TARIFFS = 20_000  # a memo, not a store: cleared when a long-running pricer has seen this many windows
NO_COMPONENTS: tuple[int | None, ...] = (None,) * len(CLASSES)


class Defer(Exception):  # noqa: N818 - a signal, not an error
    """The fast path cannot give this event the reference result for sure; the reference path prices it."""


class PricingOutcome(NamedTuple):
    """Everything in a priced row that is not an amount; shared by all the events a tariff prices alike."""

    status: str
    source: str
    version: str
    basis: str
    note: str


# One event's charge: the 11 class components in CLASSES order (units, or all None when unpriced),
# the reference (savings) cost in units or None, and the outcome.
Charge = tuple[tuple[int | None, ...], int | None, PricingOutcome]


def reference_decides(event: Any) -> bool:
    """A 2xx answer whose usage could not be read may be unmetered (no cost, never $0): a tariff only charges
    tokens, so such an event is always priced by the reference path (``PriceBook.price``), which decides."""
    return bool(event.usage_source == "none" and 200 <= event.http_status < 300)


def components_sum(components: tuple[int | None, ...], part: slice = slice(None)) -> int | None:
    """The sum of ``part`` of a charge's components, or None when it is unpriced (then every one is None)."""
    return None if components[0] is None else sum(cast("tuple[int, ...]", components[part]))


def outcome_of(priced: Priced) -> PricingOutcome:
    return PricingOutcome(priced.pricing_status, priced.price_source, priced.price_version, priced.cost_basis,
                          priced.note)


def charge_of(priced: Priced) -> Charge:
    """The reference result in the fast path's terms (also how rows.py keeps events it priced slowly)."""
    components = NO_COMPONENTS if priced.components is None else tuple(units(v) for v in priced.components.as_row())
    reference = None if priced.reference_cost_usd is None else units(priced.reference_cost_usd)
    return components, reference, outcome_of(priced)


class Band:
    """The card's per-token prices for prompts in one long-context band (between two tier thresholds)."""

    def __init__(self, rates: list[tuple[int, int, int] | None], tiers: list[int | None], other: int = 0) -> None:
        self.numerators = tuple(0 if r is None else r[0] for r in rates)
        self.denominators = tuple(1 if r is None else r[1] for r in rates)
        self.whole = all(d == 1 for d in self.denominators)  # every class a whole number of units per token
        # The per-request fee rides as an 11th "class" of count 1, so a whole band's components are one map().
        self.factors = (*self.numerators, other)
        self.unrated = tuple(i for i, r in enumerate(rates) if r is None)
        self.tiers = tuple(tiers)  # per class: the tier threshold its rate comes from (None: base)
        self.tiered = any(t is not None for t in tiers)
        # The classes priced at a tier, last first: tier() stops at the first of them with tokens.
        self.tiered_last_first = tuple((i, t) for i, t in reversed(list(enumerate(tiers))) if t is not None)
        # Whole, untiered and every class rated (most cards): the outcome never varies with the usage, so the
        # tariff keeps it here on first use and charges such a band in one step.
        self.simple = self.whole and not self.tiered and not self.unrated
        self.plain: PricingOutcome | None = None

    def costs(self, counts: tuple[int, ...]) -> list[int]:
        if self.whole:
            return list(map(mul, counts, self.numerators))
        return [round_half_even(n * a, q) for n, a, q in zip(counts, self.numerators, self.denominators, strict=True)]

    def components(self, counts: tuple[int, ...]) -> tuple[int, ...]:
        """:meth:`costs` and the per-request fee: the 11 components in CLASSES order."""
        if self.whole:
            return tuple(map(mul, (*counts, 1), self.factors))
        return (*self.costs(counts), self.factors[-1])

    def tier(self, counts: tuple[int, ...]) -> int | None:
        """Like :func:`apply_card`: the threshold of the last rated class with tokens priced at a tier."""
        for i, tier in self.tiered_last_first:  # an unrated class has no tier
            if counts[i]:
                return tier
        return None


class ListTariff:
    """A resolved rate card (list price or overrides, discounts applied), in integer units per token."""

    def __init__(self, book: PriceBook, resolved: Resolved) -> None:
        card = resolved.card
        self.book, self.resolved = book, resolved
        rates = [card.rate_for(c) for c in TOKEN_CLASSES]
        self.breaks = sorted({t for r in rates if r is not None for t, _ in r.tiers})
        # A fee per request (< 1e24 units: overrides' 24 digits) keeps a row's total below 1e28 either way.
        self.other = units(money(card.per_request)) if card.per_request else 0
        # Band k holds prompts with breaks[k-1] < prompt <= breaks[k] (a tier applies *above* its threshold).
        probes = [0, *(b + 1 for b in self.breaks)]
        self.bands = []
        exact = []
        for prompt in probes:
            chosen = [None if r is None else r.at(prompt) for r in rates]
            band_rates = [None if c is None else list_rate(c[0]) for c in chosen]
            exact += [r for r in band_rates if r is not None]
            self.bands.append(Band(band_rates, [None if c is None else c[1] for c in chosen], self.other))
        self.safe = safe_tokens(exact)
        self.outcomes: dict[tuple[int | None, tuple[str, ...]], PricingOutcome] = {}

    def outcome(self, tier: int | None, missing: tuple[str, ...]) -> PricingOutcome:
        key = (tier, missing)
        found = self.outcomes.get(key)
        if found is None:
            priced = self.book.charged(self.resolved, Components(), tier, missing)
            found = self.outcomes[key] = outcome_of(priced)
        return found

    def charge(self, usage: UsageCounts, seconds: float | None = None) -> Charge:
        prompt = usage.input_tokens
        if prompt >= self.safe or usage.output_tokens >= self.safe:
            raise Defer("token counts past the exact bound")
        counts = class_count_tuple(usage)
        band = self.bands[bisect_left(self.breaks, prompt)] if self.breaks else self.bands[0]
        if band.plain is not None:
            return band.components(counts), None, band.plain
        tier = band.tier(counts) if band.tiered else None
        if band.unrated and any(counts[i] for i in band.unrated):
            missing = tuple(TOKEN_CLASSES[i] for i in band.unrated if counts[i])
            return NO_COMPONENTS, None, self.outcome(tier, missing)
        found = self.outcome(tier, ())
        if band.simple:
            band.plain = found
        return band.components(counts), None, found

    def total(self, usage: UsageCounts) -> int | None:
        components = self.charge(usage)[0]
        return components_sum(components)


class FixedTariff:
    """A row that does not depend on the usage: unpriced (no price anywhere, no GPU cost configured)."""

    def __init__(self, priced: Priced) -> None:
        self.result: Charge = charge_of(priced)

    def charge(self, usage: UsageCounts, seconds: float | None = None) -> Charge:
        return self.result

    def total(self, usage: UsageCounts) -> int | None:
        return None


class DeferTariff:
    """A case whose row depends on more than the window (e.g. a note naming the exact time): never fast."""

    def charge(self, usage: UsageCounts, seconds: float | None = None) -> Charge:
        raise Defer("priced by the reference path")

    def total(self, usage: UsageCounts) -> int | None:
        raise Defer("priced by the reference path")


Tariff = ListTariff | FixedTariff | DeferTariff


class GpuTariff:
    """A self-hosted backend's GPU period in force, and its reference model's tariff (the savings basis)."""

    def __init__(self, book: PriceBook, backend: Backend, at: datetime, reference: Tariff | None) -> None:
        period = backend.gpu_at(at)
        assert period is not None  # a backend with no period at this time gets a DeferTariff
        self.period, self.reference = period, reference
        rate = throughput_rate(period.usd_per_hour, period.sustained_tokens_per_second * gpu_pricing.SECONDS_PER_HOUR)
        self.numerator, self.denominator, _ = rate
        self.safe = safe_tokens([rate])
        self.outcomes = {basis: PricingOutcome(PRICED, gpu_pricing.describe(period, basis), book.version, basis, "")
                         for basis in (gpu_pricing.THROUGHPUT, gpu_pricing.GPU_SECONDS)}

    def charge(self, usage: UsageCounts, seconds: float | None = None) -> Charge:
        reference = None if self.reference is None else self.reference.total(usage)
        if seconds is not None:  # measured GPU time: the reference arithmetic itself (a minority of events)
            by_class = gpu_pricing.by_gpu_seconds(usage, seconds, self.period).by_class
            amounts = tuple(units(by_class[c]) if c in by_class else 0 for c in CLASSES)
            return amounts, reference, self.outcomes[gpu_pricing.GPU_SECONDS]
        if usage.input_tokens >= self.safe or usage.output_tokens >= self.safe:
            raise Defer("token counts past the exact bound")
        a, q = self.numerator, self.denominator
        costs = [round_half_even(n * a, q) if n else 0 for n in class_count_tuple(usage)]
        return (*costs, 0), reference, self.outcomes[gpu_pricing.THROUGHPUT]


def _instants(book: PriceBook) -> Iterator[datetime]:
    overrides = book.overrides
    for entry in (*overrides.prices, *overrides.discounts, *overrides.batch):
        yield from (t for t in (entry.effective_from, entry.effective_to) if t is not None)
    for backend in book.config.backends.values():
        for period in backend.gpu_periods:
            yield from (t for t in (period.effective_from, period.effective_to) if t is not None)


def _snapshot_times() -> Iterator[Any]:
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            conditional = model.prices if isinstance(model.prices, list) else []
            for item in (*conditional, *(model.price_variants or ())):
                if isinstance(item.constraint, TimeOfDateConstraint):
                    yield from (item.constraint.start_time, item.constraint.end_time)


def minute_windows(book: PriceBook) -> bool:
    """Does every price boundary fall on a whole minute? (genai-prices start dates are whole days.)"""
    return all(t.second == 0 and t.microsecond == 0 for t in (*_instants(book), *_snapshot_times()))


class RouteKey(NamedTuple):
    """The tariff memo's key: what prices an event besides its usage, and the labels its rows share with the
    other events of its route. ``batch_tag`` is the event's ``tags["batch"]``; ``window`` its ``started_at``
    text cut to the minute (``YYYY-MM-DDTHH:MM``), or whole when some price boundary is not on a minute."""

    deployment: str
    backend: str
    provider: str
    model_requested: str
    model_served: str
    api: str
    batch_tag: str | None
    window: str


# The fields copied from the event as they are: RouteKey's leading fields (also the route's row labels).
ROUTE_FIELDS: tuple[str, ...] = RouteKey._fields[:6]


def route_key(event: Any, by_minute: bool) -> tuple[Any, ...]:
    """The event's :class:`RouteKey`, as a plain tuple (equal to it; plain attribute loads, as this runs per
    event). Checked against RouteKey below, at import."""
    tags = event.attribution.tags
    return (event.deployment, event.backend, event.provider, event.model_requested, event.model_served, event.api,
            tags.get("batch") if tags else None, event.started_at[:16] if by_minute else event.started_at)


class _Probe:
    """An event whose every field holds its own name, to read which field lands where in route_key()."""

    def __init__(self) -> None:
        self.attribution = type("Attribution", (), {"tags": {"batch": "attribution.tags.batch"}})()
        self.started_at = "started_at"

    def __getattr__(self, name: str) -> str:
        return name


if route_key(_Probe(), by_minute=False) != (*ROUTE_FIELDS, "attribution.tags.batch", "started_at"):
    raise ImportError("route_key() no longer builds RouteKey's fields in RouteKey's order")
if {*ROUTE_FIELDS, "attribution.tags.batch", "started_at"} != PRICE_KEY_INPUTS:
    raise ImportError("RouteKey no longer carries every field PriceBook.price reads (PRICE_KEY_INPUTS): an event "
                      "could be charged another event's price; update RouteKey and route_key together")


class Tariffs:
    """The memo: one tariff per (what prices an event, window), built through the PriceBook itself."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self.by_minute = minute_windows(book)
        self.known: dict[tuple[Any, ...], Tariff | GpuTariff] = {}

    def get(self, key: tuple[Any, ...]) -> Tariff | GpuTariff:
        """``key``: a :func:`route_key` (a :class:`RouteKey`'s values)."""
        found = self.known.get(key)
        if found is None:
            if len(self.known) >= MAX_TARIFFS:
                self.known.clear()
            found = self.known[key] = self._build(key)
        return found

    def _build(self, key: tuple[Any, ...]) -> Tariff | GpuTariff:
        deployment, backend_name, provider, requested, served, api, batch_tag, window = RouteKey._make(key)
        book, at = self.book, datetime.fromisoformat(window).replace(tzinfo=UTC)
        batch = batch_traffic(api, batch_tag)
        try:
            if deployment == "self_hosted":
                backend = book.config.backends.get(backend_name)
                if backend is None or not backend.gpu_periods:
                    return FixedTariff(book.no_gpu_cost(backend_name))
                if backend.gpu_at(at) is None:
                    return DeferTariff()  # the row's note names the event's exact time
                ref = backend.reference_model
                reference = None if ref is None else self.list_tariff(ref.provider, (ref.model,), at)
                return GpuTariff(book, backend, at, reference)
            priced_provider, names = book.price_names(provider, requested, served)
            return self.list_tariff(priced_provider, names, at, batch=batch)
        except InexactError:
            return DeferTariff()

    def list_tariff(self, provider: str, names: tuple[str, ...], at: datetime, *, batch: bool = False) -> Tariff:
        found = self.book.resolve(provider, names, at, batch=batch)
        return FixedTariff(found) if isinstance(found, Priced) else ListTariff(self.book, found)


def tariffs(book: PriceBook) -> Tariffs:
    """The book's memo, made on first use (a PriceBook is immutable once built, so the memo never goes stale)."""
    memo = book.memo.get("tariffs")
    if memo is None:
        memo = book.memo["tariffs"] = Tariffs(book)
    return memo

