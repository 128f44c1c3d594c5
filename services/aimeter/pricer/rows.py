"""Turning a batch of Kafka message values into ClickHouse rows: pure, so it is tested without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aimeter.events import UsageEvent
from aimeter.pricer.core import PriceBook, Priced
from aimeter.pricer.rates import CLASSES

EVENT_COLUMNS = [
    "event_id", "gateway_id", "started_at", "first_token_at", "ended_at", "api", "backend", "provider",
    "deployment", "model_requested", "model_served", "stream", "status", "http_status", "usage_source",
    "input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens", "input_audio_tokens", "input_image_tokens", "output_tokens",
    "reasoning_output_tokens", "output_audio_tokens", "output_image_tokens", "backend_compute_seconds",
    "team", "project", "user", "api_key_id", "tags",
]
COST_COLUMNS = [
    "event_id", "started_at", "ended_at", "api", "backend", "provider", "deployment", "model", "status", "stream",
    "team", "project", "user", "api_key_id", "input_tokens", "cache_read_input_tokens",
    "cache_creation_input_tokens", "output_tokens", "reasoning_output_tokens", "cost_usd", "input_cost_usd",
    "output_cost_usd", "reference_cost_usd", "pricing_status", "pricing_note", "price_source", "price_version",
    "rating_version", "priced_at",
    # 0003: how it was priced, per-class components (sum = cost_usd) and the token classes behind them.
    "cost_basis", *(f"{c}_cost_usd" for c in CLASSES), "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens", "input_audio_tokens", "input_image_tokens", "output_audio_tokens",
    "output_image_tokens",
]
USAGE_FIELDS = EVENT_COLUMNS[EVENT_COLUMNS.index("input_tokens"):EVENT_COLUMNS.index("backend_compute_seconds")]
ATTRIBUTION_FIELDS = ["team", "project", "user", "api_key_id", "tags"]


@dataclass
class Batch:
    """Rows ready to insert, and the messages that can never be processed (for the dead-letter topic)."""

    event_rows: list[list[Any]] = field(default_factory=list)
    cost_rows: list[list[Any]] = field(default_factory=list)
    poison: list[tuple[bytes, str]] = field(default_factory=list)


def parse_event(raw: bytes) -> UsageEvent:
    return UsageEvent.model_validate_json(raw)


def event_row(e: UsageEvent) -> list[Any]:
    u, a = e.usage, e.attribution
    return [
        e.event_id, e.gateway_id, e.started_at, e.first_token_at, e.ended_at, e.api, e.backend, e.provider,
        e.deployment.value, e.model_requested, e.model_served, e.stream, e.status.value, e.http_status,
        e.usage_source.value, u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens,
        u.cache_creation_5m_input_tokens, u.cache_creation_1h_input_tokens, u.input_audio_tokens,
        u.input_image_tokens, u.output_tokens, u.reasoning_output_tokens, u.output_audio_tokens,
        u.output_image_tokens, e.backend_compute_seconds, a.team, a.project, a.user, a.api_key_id, a.tags,
    ]


def cost_row(e: UsageEvent, book: PriceBook, rating_version: int, priced_at: datetime) -> list[Any]:
    return priced_row(e, book.price(e), rating_version, priced_at)


def priced_row(e: UsageEvent, p: Priced, rating_version: int, priced_at: datetime) -> list[Any]:
    """One ``usage_costs`` row, in :data:`COST_COLUMNS` order."""
    u, a = e.usage, e.attribution
    components = p.components.as_row() if p.components is not None else [None] * len(CLASSES)
    return [
        e.event_id, e.started_at, e.ended_at, e.api, e.backend, e.provider, e.deployment.value,
        e.model_served or e.model_requested, e.status.value, e.stream, a.team, a.project, a.user, a.api_key_id,
        u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens, u.output_tokens,
        u.reasoning_output_tokens, p.cost_usd, p.input_cost_usd, p.output_cost_usd, p.reference_cost_usd,
        p.pricing_status, p.note, p.price_source, p.price_version, rating_version, priced_at,
        p.cost_basis, *components, u.cache_creation_5m_input_tokens, u.cache_creation_1h_input_tokens,
        u.input_audio_tokens, u.input_image_tokens, u.output_audio_tokens, u.output_image_tokens,
    ]


def event_from_row(row: dict[str, Any]) -> UsageEvent:
    """The inverse of :func:`event_row`: rebuild an event from ``usage_events`` (for re-rating).

    ClickHouse clients hand UTC columns back naive; they are made aware again here.
    """
    data = {k: v for k, v in row.items() if k not in USAGE_FIELDS and k not in ATTRIBUTION_FIELDS}
    for key in ("started_at", "first_token_at", "ended_at"):
        value = data.get(key)
        if isinstance(value, datetime) and value.tzinfo is None:
            data[key] = value.replace(tzinfo=UTC)
    data["usage"] = {k: row[k] for k in USAGE_FIELDS}
    data["attribution"] = {k: row[k] for k in ATTRIBUTION_FIELDS}
    return UsageEvent.model_validate(data)


def build_batch(values: list[bytes], book: PriceBook, priced_at: datetime) -> Batch:
    """Parse, price and shape a batch. A message that fails validation is poison, never silently skipped."""
    batch = Batch()
    for raw in values:
        try:
            event = parse_event(raw)
        except ValidationError as exc:
            batch.poison.append((raw, f"invalid UsageEvent v1: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"))
            continue
        try:
            cost = cost_row(event, book, 0, priced_at)
        except Exception as exc:  # noqa: BLE001 - one unpriceable event must not stall the partition
            batch.poison.append((raw, f"pricing failed: {type(exc).__name__}: {exc}"))
            continue
        batch.event_rows.append(event_row(event))
        batch.cost_rows.append(cost)
    return batch
