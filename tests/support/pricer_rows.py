"""The reference oracles of the pricer's rows: a batch's rows, and one event's rows, in the classic Python
form (UUID, aware datetimes, Decimal amounts) that clickhouse-connect's row insert takes.

The pricer writes wire-form Native blocks (services/aimeter/pricer/write.py); these build the same rows
the slow, obvious way, so tests compare the two and seed stores by plain inserts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from msgspec.structs import astuple

from aimeter.events import UsageEvent
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rates import INPUT_PART, OUTPUT_PART
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, Batch, priced_row
from aimeter.pricer.tariff import components_sum
from aimeter.pricer.unitmath import from_units

DATETIME_COLUMNS = ("started_at", "first_token_at", "ended_at")
_AT = {c: EVENT_COLUMNS.index(c) for c in EVENT_COLUMNS}


def event_rows(batch: Batch) -> list[list[Any]]:
    """The batch's ``usage_events`` rows, in :func:`event_row`'s form."""
    return [classic_event_row(batch, i) for i in range(len(batch.events))]


def cost_rows(batch: Batch) -> list[list[Any]]:
    """The batch's ``usage_costs`` rows, in ``priced_row``'s form."""
    return [classic_cost_row(batch, i) for i in range(len(batch.events))]


def flat(event: Any) -> list[Any]:
    """A struct's values in :data:`EVENT_COLUMNS` order (its fields are in that order, checked at import)."""
    head = astuple(event)
    return [*head[1:16], *astuple(event.usage), head[17], *astuple(event.attribution), *head[19:]]


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def classic_event_row(batch: Batch, i: int) -> list[Any]:
    row = flat(batch.events[i])
    row[0] = UUID(row[0])
    for column in DATETIME_COLUMNS:
        row[_AT[column]] = _moment(row[_AT[column]])
    return row


def classic_cost_row(batch: Batch, i: int) -> list[Any]:
    e = dict(zip(EVENT_COLUMNS, classic_event_row(batch, i), strict=True))
    components, reference, o = batch.charges[i]
    total = from_units(components_sum(components))
    input_cost = from_units(components_sum(components, INPUT_PART))
    output_cost = from_units(components_sum(components, OUTPUT_PART))
    return [
        e["event_id"], e["started_at"], e["ended_at"], e["api"], e["backend"], e["provider"], e["deployment"],
        e["model_served"] or e["model_requested"], e["status"], e["stream"], e["team"], e["project"], e["user"],
        e["api_key_id"], e["input_tokens"], e["cache_read_input_tokens"], e["cache_creation_input_tokens"],
        e["output_tokens"], e["reasoning_output_tokens"], total, input_cost, output_cost, from_units(reference),
        o.status, o.note, o.source, o.version, 0, batch.priced_at, o.basis, *map(from_units, components),
        *(e[c] for c in COST_COLUMNS[-6:]),
    ]


def event_row(e: UsageEvent) -> list[Any]:
    """One ``usage_events`` row from the pydantic event, in :data:`EVENT_COLUMNS` order."""
    u, a = e.usage, e.attribution
    return [
        e.event_id, e.gateway_id, e.started_at, e.first_token_at, e.ended_at, e.api, e.backend, e.provider,
        e.deployment.value, e.model_requested, e.model_served, e.stream, e.status.value, e.http_status,
        e.usage_source.value, u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens,
        u.cache_creation_5m_input_tokens, u.cache_creation_1h_input_tokens, u.input_audio_tokens,
        u.input_image_tokens, u.output_tokens, u.reasoning_output_tokens, u.output_audio_tokens,
        u.output_image_tokens, e.backend_compute_seconds, a.team, a.project, a.user, a.api_key_id, a.tags,
        e.usage_problem, e.upstream_error_type, e.usage_flags, e.credential_id, e.upstream_project, e.service_tier,
    ]


def cost_row(e: UsageEvent, book: PriceBook, rating_version: int, priced_at: datetime) -> list[Any]:
    """One ``usage_costs`` row priced by the reference path."""
    return priced_row(e, book.price(e), rating_version, priced_at)
