"""What a request may cost (its reservation) and what its event did cost, priced exactly as the ledger prices it.

No second price calculator: both go through the pricer's memoized tariffs (:mod:`aimeter.pricer.tariff`, list
price after overrides and discounts, batch, GPU marginal cost for self-hosted), falling back to the reference
``PriceBook.price`` where the tariff defers. The worst case is the same price applied to a worst-case usage:
the prompt estimate as input tokens and the request's output cap (or the model's output limit) as output.
Pure: the caller passes the time.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aimeter.events import Attribution, TokenUsage, UsageEvent
from aimeter.pricer import fastparse
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rates import class_count_tuple
from aimeter.pricer.tariff import (
    Defer,
    FixedTariff,
    GpuTariff,
    ListTariff,
    charge_of,
    components_sum,
    reference_decides,
    route_key,
    tariffs,
)
from aimeter.pricer.unitmath import round_half_even

# Request fields that cap the answer's length, per API (OpenAI Chat / Completions, Responses, Anthropic, Gemini,
# Ollama). The smallest one present wins (an upstream stops at the first cap it reaches).
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_NO_TAGS: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Tags:
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class Route:
    """The fields a tariff is keyed by (``tariff.RouteKey``), for a request not yet answered."""

    deployment: str
    backend: str
    provider: str
    model_requested: str
    model_served: str
    api: str
    attribution: Tags
    started_at: str


def output_cap(body: dict[str, Any], limit: int) -> int:
    """The most output tokens the request lets the model generate: its own cap, else the model's ``limit``.

    A cap is a JSON integer >= 0 (``type(v) is int``: a bool is no cap, and a negative one would make the
    reservation negative). Plain lookups, no list: this runs on every request with a budget."""
    cap = limit
    for key in _OUTPUT_CAPS:
        v = body.get(key)
        if type(v) is int and 0 <= v < cap:
            cap = v
    if "generationConfig" in body:
        generation = body["generationConfig"]
        if isinstance(generation, dict) and type(v := generation.get("maxOutputTokens")) is int and 0 <= v < cap:
            cap = v
    if "options" in body:
        options = body["options"]
        if isinstance(options, dict) and type(v := options.get("num_predict")) is int and 0 <= v < cap:
            cap = v
    return cap


class WorstUsage:
    """A usage of only input and output tokens (every other class 0), as pricing reads one (``UsageCounts``);
    a plain object, since a pydantic TokenUsage costs ~10x more to build and this one is built per request."""

    __slots__ = ("input_tokens", "output_tokens")
    cache_read_input_tokens = cache_creation_input_tokens = cache_creation_5m_input_tokens = 0
    cache_creation_1h_input_tokens = input_audio_tokens = input_image_tokens = 0
    reasoning_output_tokens = output_audio_tokens = output_image_tokens = 0

    def __init__(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens, self.output_tokens = input_tokens, output_tokens


def worst_usage(body: dict[str, Any], body_bytes: int, limit: int, embeddings: bool = False) -> WorstUsage:
    """The prompt estimate as input tokens: the whole body at ~4 bytes a token, rounded up (it errs high: the
    JSON around the prompt counts too, and walking the body for its text costs ~10x more); the output cap as
    output (embeddings generate none)."""
    return WorstUsage(-(-body_bytes // 4), 0 if embeddings else output_cap(body, limit))


# Where a usage of only input and output tokens puts them among a tariff's token classes.
_IN = class_count_tuple(WorstUsage(1, 0)).index(1)
_OUT = class_count_tuple(WorstUsage(0, 1)).index(1)


class WorstRates:
    """What a tariff charges a usage of only input and output tokens, in a few integer operations: the sum of
    ``tariff.charge(WorstUsage(prompt, output))``'s components, without building the usage or the 11 components.

    Made from a memoized tariff once per route and minute (the gate keeps it), so a reservation costs a band
    lookup and two multiplies. ``price`` raises :class:`Defer` where the tariff would, and the caller asks
    :meth:`Costs.worst_case` (the reference path) as before."""

    __slots__ = ("bands", "breaks", "fixed", "safe")

    def __init__(self, breaks: tuple[int, ...], bands: tuple[tuple[int, int, int, int, int, bool, bool], ...],
                 safe: int, fixed: int | None = None) -> None:
        # Per band: input numerator, denominator, output numerator, denominator, fee per request, input rated,
        # output rated (a token of an unrated class makes the row unpriced: cost None).
        self.breaks, self.bands, self.safe, self.fixed = breaks, bands, safe, fixed

    def price(self, prompt: int, output: int) -> int | None:
        if not self.bands:  # a fixed row (FixedTariff): the same for every usage
            return self.fixed
        if prompt >= self.safe or output >= self.safe:
            raise Defer("token counts past the exact bound")
        band = self.bands[bisect_left(self.breaks, prompt)] if self.breaks else self.bands[0]
        in_n, in_q, out_n, out_q, fee, in_rated, out_rated = band
        if (prompt and not in_rated) or (output and not out_rated):
            return None
        cost_in = prompt * in_n if in_q == 1 else round_half_even(prompt * in_n, in_q)
        return fee + cost_in + (output * out_n if out_q == 1 else round_half_even(output * out_n, out_q))


def worst_rates(tariff: Any) -> WorstRates | None:
    """The tariff's :class:`WorstRates`, or None when only its own ``charge`` (or the reference path) can price
    it (a DeferTariff; a GPU tariff whose savings basis defers)."""
    if isinstance(tariff, ListTariff):
        bands = tuple((b.numerators[_IN], b.denominators[_IN], b.numerators[_OUT], b.denominators[_OUT],
                       b.factors[-1], _IN not in b.unrated, _OUT not in b.unrated) for b in tariff.bands)
        return WorstRates(tuple(tariff.breaks), bands, tariff.safe)
    if isinstance(tariff, FixedTariff):
        return WorstRates((), (), 0, components_sum(tariff.result[0]))
    if isinstance(tariff, GpuTariff):
        reference = tariff.reference  # charge() also totals the savings basis, which may defer
        if reference is not None and not isinstance(reference, ListTariff | FixedTariff):
            return None
        safe = min(tariff.safe, reference.safe) if isinstance(reference, ListTariff) else tariff.safe
        a, q = tariff.numerator, tariff.denominator
        return WorstRates((), ((a, q, a, q, 0, True, True),), safe)
    return None


def utc_minute(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Costs:
    """Prices for budgets from one price book (the one the pricer uses: same config, same overrides)."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book
        self.memo = tariffs(book)

    def tariff(self, route: Route) -> Any:
        """The pricer's memoized tariff for ``route`` (its minute), or None: then :meth:`worst_case` asks the
        reference path."""
        try:
            return self.memo.get(route_key(route, self.memo.by_minute))
        except Exception:  # noqa: BLE001 - a key the memo cannot build: the reference path decides
            return None

    def worst_case(self, route: Route, usage: Any, tariff: Any = None) -> int | None:
        """Units (1e-12 USD) ``usage`` costs on ``route``; None when nobody prices the model."""
        try:
            return components_sum((tariff or self.memo.get(route_key(route, self.memo.by_minute))).charge(usage)[0])
        except Exception:  # noqa: BLE001 - the tariff defers (or cannot key it): the reference path decides
            event = UsageEvent(event_id="00000000-0000-7000-8000-000000000000", started_at=route.started_at,
                               ended_at=route.started_at, api=route.api, backend=route.backend,
                               provider=route.provider, deployment=route.deployment,
                               model_requested=route.model_requested, model_served=route.model_served,
                               stream=False, status="ok", http_status=200, usage_source="reported",
                               usage=TokenUsage.model_validate(usage, from_attributes=True),
                               attribution=Attribution(tags=route.attribution.tags))
            return components_sum(charge_of(self.book.price(event))[0])

    def of_event(self, raw: bytes) -> tuple[Any, int | None]:
        """An encoded usage event, decoded (fast struct or pydantic model) with its cost in units, as the pricer
        prices it (``rows.build_batch``: the tariff, else ``PriceBook.price``)."""
        event: Any = fastparse.decode(raw)
        if event is not None and not reference_decides(event):
            fast = self._fast(event)
            if fast is not None:
                return event, fast[0]
        model = UsageEvent.model_validate_json(raw)
        return model, components_sum(charge_of(self.book.price(model))[0])

    def _fast(self, event: Any) -> tuple[int | None] | None:
        """The tariff's charge as a 1-tuple, or None when it defers to the reference path."""
        try:
            tariff = self.memo.get(route_key(event, self.memo.by_minute))
            return (components_sum(tariff.charge(event.usage, event.backend_compute_seconds)[0]),)
        except Exception:  # noqa: BLE001 - Defer, or a key the tariff cannot build: the reference path decides
            return None
