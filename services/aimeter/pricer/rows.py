"""Turning a batch of Kafka message values into ClickHouse rows: pure, so it is tested without I/O.

Two paths give the same rows and the same decisions (tests/unit/test_pricer_fastpath.py checks it):

* the fast path (~10x cheaper): the msgspec twin of the contract (:mod:`aimeter.pricer.fastparse`)
  and the memoized, integer tariffs (:mod:`aimeter.pricer.tariff`);
* the reference path: pydantic's ``UsageEvent`` and ``PriceBook.price``. Every message the fast path
  does not take for sure (an unusual spelling, an invalid event, an amount past 28 digits) goes here,
  and here alone is a message rejected: a poison message always gets pydantic's own reason.

Rows are kept in *wire* form (texts and integer units, see :mod:`aimeter.pricer.write`); the tests read
them in the classic Python form through tests/support/pricer_rows.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aimeter.events import Attribution, TokenUsage, UsageEvent
from aimeter.pricer import fastparse
from aimeter.pricer.pricebook import PriceBook, Priced
from aimeter.pricer.rates import CLASSES
from aimeter.pricer.tariff import Charge, DeferTariff, Tariffs, charge_of, reference_decides, route_key, tariffs

EVENT_COLUMNS = [
    "event_id", "gateway_id", "started_at", "first_token_at", "ended_at", "api", "backend", "provider",
    "deployment", "model_requested", "model_served", "stream", "status", "http_status", "usage_source",
    "input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens", "input_audio_tokens", "input_image_tokens", "output_tokens",
    "reasoning_output_tokens", "output_audio_tokens", "output_image_tokens", "backend_compute_seconds",
    "team", "project", "user", "api_key_id", "tags",
    "usage_problem", "upstream_error_type", "usage_flags",  # 0006: the gateway's diagnosis
    "credential_id", "upstream_project", "service_tier",  # 0009: the provider account (issue 19)
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


def _flat_fields() -> list[str]:
    """The fast struct's fields in row order (without schema_version), to prove the rows line up."""
    names: list[str] = []
    for name in fastparse.FastEvent.__struct_fields__[1:]:
        nested = {"usage": fastparse.struct_for(TokenUsage), "attribution": fastparse.struct_for(Attribution)}
        names += nested[name].__struct_fields__ if name in nested else (name,)
    return names


if fastparse.FastEvent.__struct_fields__[0] != "schema_version" or _flat_fields() != EVENT_COLUMNS:
    raise ImportError("UsageEvent's fields no longer match EVENT_COLUMNS: update rows.py with the contract")


@dataclass
class Batch:
    """Rows ready to insert, and the messages that can never be processed (for the dead-letter topic).

    ``events`` are the accepted events as :data:`fastparse.FastEvent` structs (ids and times as canonical
    UTC texts, see :mod:`aimeter.pricer.write`), ``charges`` their prices and ``route_of`` their routes,
    one each; the writer takes the labels a route fixes from ``routes``, once per route.
    """

    priced_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    events: list[Any] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)
    poison: list[tuple[bytes, str]] = field(default_factory=list)
    routes: list[tuple[Any, ...]] = field(default_factory=list)  # distinct tariff.route_key()s of its events
    route_of: list[int] = field(default_factory=list)  # each event's route, by its position in ``routes``


def parse_event(raw: bytes) -> UsageEvent:
    return UsageEvent.model_validate_json(raw)


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
    """An event rebuilt from its ``usage_events`` row (for re-rating).

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


def add_by_reference(batch: Batch, raw: bytes, book: PriceBook, by_minute: bool) -> None:
    """The reference path for one message: pydantic decides, ``PriceBook.price`` prices."""
    try:
        event = parse_event(raw)
    except ValidationError as exc:
        batch.poison.append((raw, f"invalid UsageEvent v1: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"))
        return
    try:
        charge = charge_of(book.price(event))
    except Exception as exc:  # noqa: BLE001 - one unpriceable event must not stall the partition
        batch.poison.append((raw, f"pricing failed: {type(exc).__name__}: {exc}"))
        return
    try:
        twin = fastparse.mirror_of(event)
    except (OverflowError, ValueError) as exc:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        batch.poison.append((raw, f"cannot be stored: {type(exc).__name__}: {exc}"))
        return
    batch.events.append(twin)
    batch.charges.append(charge)
    key = route_key(twin, by_minute)
    if key not in batch.routes:
        batch.routes.append(key)
    batch.route_of.append(batch.routes.index(key))


def build_batch(values: list[bytes], book: PriceBook, priced_at: datetime, *, fast: bool = True) -> Batch:
    """Parse, price and shape a batch. A message that fails validation is poison, never silently skipped.

    Rows come fast-path first; the poison list keeps the input order. ``fast=False`` prices every message
    by the reference path (the tests compare the two).
    """
    batch = Batch(priced_at)
    memo = tariffs(book)
    by_minute, events, charges, route_of = memo.by_minute, batch.events, batch.charges, batch.route_of
    routes: dict[tuple[Any, ...], int] = {}  # this batch's routes, numbered in order of appearance
    priced_by: list[Any] = []  # each route's tariff (None: the reference path prices its events)
    slow: list[int] = []
    decoded = fastparse.decode_all(values) if fast else [None] * len(values)
    for index, e in enumerate(decoded):
        if e is None:
            slow.append(index)
            continue
        if reference_decides(e):
            slow.append(index)
            continue
        key = route_key(e, by_minute)
        route = routes.get(key)
        if route is None:
            route = routes[key] = len(routes)
            priced_by.append(_tariff(memo, key))
        try:
            charge = priced_by[route].charge(e.usage, e.backend_compute_seconds)
        except Exception:  # noqa: BLE001 - Defer, or anything the reference path must decide (and explain)
            slow.append(index)
            continue
        events.append(e)
        charges.append(charge)
        route_of.append(route)
    bad = fastparse.bad_texts(events)
    if bad:  # rare: an unusual spelling of a time or id; pydantic decides those
        refused = set(slow)
        taken = [i for i in range(len(values)) if i not in refused]  # the message index of each fast event
        keep = [i for i in range(len(events)) if i not in bad]
        batch.events, batch.charges = [events[i] for i in keep], [charges[i] for i in keep]
        batch.route_of = [route_of[i] for i in keep]
        slow = sorted([*slow, *(taken[i] for i in bad)])
    batch.routes = list(routes)
    for index in slow:
        add_by_reference(batch, values[index], book, memo.by_minute)
    if len(set(batch.route_of)) != len(batch.routes):  # a route whose only events were refused after all
        used = list(dict.fromkeys(batch.route_of))
        number = {old: new for new, old in enumerate(used)}
        batch.routes, batch.route_of = [batch.routes[i] for i in used], [number[r] for r in batch.route_of]
    return batch


def _tariff(memo: Tariffs, key: tuple[Any, ...]) -> Any:
    try:
        return memo.get(key)
    except Exception:  # noqa: BLE001 - e.g. a window that is no time (its text is checked after the loop)
        return DeferTariff()
