"""What a request may cost (its reservation) and what its event did cost, priced exactly as the ledger prices it.

No second price calculator: both go through the pricer's memoized tariffs (:mod:`aimeter.pricer.tariff`, list
price after overrides and discounts, batch, GPU marginal cost for self-hosted), falling back to the reference
``PriceBook.price`` where the tariff defers. The worst case is the same price applied to a worst-case usage:
the prompt estimate as input tokens and the request's output cap (or the model's output limit) as output.
Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aimeter.events import Attribution, TokenUsage, UsageEvent
from aimeter.pricer import fastparse
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.tariff import charge_of, components_sum, route_key, tariffs

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
    """The most output tokens the request lets the model generate: its own cap, else the model's ``limit``."""
    caps = [v for k in _OUTPUT_CAPS if isinstance(v := body.get(k), int) and not isinstance(v, bool) and v >= 0]
    generation = body.get("generationConfig")
    if isinstance(generation, dict) and isinstance(v := generation.get("maxOutputTokens"), int):
        caps.append(v)
    options = body.get("options")
    if isinstance(options, dict) and isinstance(v := options.get("num_predict"), int) and v >= 0:
        caps.append(v)
    return min([limit, *caps])


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
        if event is not None and not (event.usage_source == "none" and 200 <= event.http_status < 300):
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
