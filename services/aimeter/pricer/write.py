"""Writing a priced batch into ClickHouse: the two inserts, as Native blocks, and their deduplication tokens.

The blocks are built here from the batch's events and charges (:mod:`aimeter.pricer.native`), so an insert
costs ClickHouse a columnar copy rather than per-value parsing, and Python a few C-level passes per column
(clickhouse-connect's row writer works per value: docs/decisions.md). Columns the two tables share (ids, times,
attribution, token counts) are encoded once and used in both; labels fixed by an event's route or its
price outcome are encoded once per route or outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import add, attrgetter, is_
from typing import Any, cast

from clickhouse_connect.driver.client import Client

from aimeter.events import Attribution, TokenUsage
from aimeter.pricer import native
from aimeter.pricer.fastparse import FastEvent, struct_for
from aimeter.pricer.rates import CLASSES, INPUT_PART, OUTPUT_PART
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, USAGE_FIELDS, Batch
from aimeter.pricer.tariff import NO_COMPONENTS, ROUTE_FIELDS, PricingOutcome, components_sum

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INSERT_SETTINGS = {
    # The blocks' texts become UUID and DateTime64, Decimal(18, 12) becomes Decimal(38, 12) (see native.py).
    "input_format_native_allow_types_conversion": 1,
    # Don't collapse duplicate keys inside the block at insert (~30% of the insert's cost): the tables are
    # ReplacingMergeTrees read with FINAL, which collapses them anyway, as it does across batches.
    "optimize_on_insert": 0,
}


def _strings(values: Sequence[Any]) -> tuple[str, bytes]:
    return "String", native.strings(values)


def _repeated(values: Sequence[Any]) -> tuple[str, bytes]:
    return "String", native.repeated_strings(values)


def _labels(values: Sequence[Any]) -> tuple[str, bytes]:
    return "LowCardinality(String)", native.labels(values)


def _texts(values: Sequence[Any]) -> tuple[str, bytes]:
    return "String", native.utc_texts(values)


def _optional_texts(values: Sequence[Any]) -> tuple[str, bytes]:
    # NULL places get a present value: ClickHouse converts them too, and one length keeps utc_texts' fast join.
    fill = next((v for v in values if v is not None), "1970-01-01T00:00:00Z")
    return "Nullable(String)", native.nullable(values, native.utc_texts, fill)


def _uint8(values: Sequence[Any]) -> tuple[str, bytes]:
    return "UInt8", native.uint(values, "B")


def _uint16(values: Sequence[Any]) -> tuple[str, bytes]:
    return "UInt16", native.uint(values, "H")


def _uint64(values: Sequence[Any]) -> tuple[str, bytes]:
    return "UInt64", native.uint(values, "Q")


def _optional_float(values: Sequence[Any]) -> tuple[str, bytes]:
    return "Nullable(Float64)", native.nullable(values, native.float64, 0.0)


def _string_map(values: Sequence[Any]) -> tuple[str, bytes]:
    return "Map(String, String)", native.string_map(values)


def _money(values: Sequence[Any]) -> tuple[str, bytes]:
    wire = native.decimal_type(values)
    return f"Nullable({wire})", native.nullable(values, lambda v: native.decimals(v, wire), 0)


# How each usage_events column goes on the wire (the ClickHouse type it converts to is the table's).
EVENT_WIRE: dict[str, Callable[[Sequence[Any]], tuple[str, bytes]]] = {
    "event_id": _strings, "started_at": _texts, "first_token_at": _optional_texts, "ended_at": _texts,
    "stream": _uint8, "http_status": _uint16, "backend_compute_seconds": _optional_float, "tags": _string_map,
    "user": _repeated, "api_key_id": _repeated, **dict.fromkeys(USAGE_FIELDS, _uint64),
}  # the other columns are LowCardinality(String) in the table (0001_usage_events.sql), sent as such


def dedup_token(batch: Batch) -> str:
    """Same events -> same token, so ClickHouse skips a retried insert it already applied."""
    # The ids' 16 bytes each, in order: the same token the row-by-row writer made, in one C-level pass.
    ids = "".join(map(attrgetter("event_id"), batch.events)).replace("-", "")
    return hashlib.sha256(bytes.fromhex(ids)).hexdigest()


def ticks(moment: datetime) -> int:
    """DateTime64(3) milliseconds, truncated like clickhouse-connect's writer."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def event_columns(events: list[Any], skip: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """The events' values by :data:`EVENT_COLUMNS` name (less ``skip``): one C-level ``attrgetter`` pass
    per column."""
    found: dict[str, list[Any]] = {}
    for name in FastEvent.__struct_fields__[1:]:
        if name in skip:
            continue
        values = list(map(attrgetter(name), events))
        if name in ("usage", "attribution"):
            fields = struct_for(TokenUsage if name == "usage" else Attribution).__struct_fields__
            found.update((field, list(map(attrgetter(field), values))) for field in fields)
        else:
            found[name] = values
    return found


def _grouped(rows: bytes, values: Sequence[str]) -> tuple[str, bytes]:
    """A LowCardinality column whose row i holds ``values[rows[i]]`` (fewer than 256 groups): the dictionary
    index of every row is one C-level byte translation of its group number."""
    keys = list(dict.fromkeys(values))
    table = bytes(map(keys.index, values)).ljust(256, b"\0")
    return "LowCardinality(String)", native.low_cardinality(keys, rows.translate(table))


def event_block(batch: Batch) -> tuple[native.Block, dict[str, tuple[str, bytes]]]:
    """The usage_events block, and every encoded column by name (the costs block reuses them).

    The labels an event's route fixes (backend, provider, models, api) are taken once per route."""
    routed = len(batch.routes) < 256
    columns = event_columns(batch.events, ROUTE_FIELDS if routed else ())
    encoded = {name: EVENT_WIRE.get(name, _labels)(values) for name, values in columns.items()}
    if routed:
        rows = bytes(batch.route_of)
        for position, name in enumerate(ROUTE_FIELDS):
            encoded[name] = _grouped(rows, [route[position] for route in batch.routes])
        model = _grouped(rows, [served or requested for _, _, _, requested, served, *_ in batch.routes])
    else:
        model = _labels([s or r for s, r in zip(columns["model_served"], columns["model_requested"], strict=True)])
    block = native.Block(len(batch.events))
    for name in EVENT_COLUMNS:
        block.add(name, *encoded[name])
    return block, encoded | {"model": model}


def _outcome_columns(outcomes: Sequence[PricingOutcome]) -> dict[str, tuple[str, bytes]]:
    """The columns that come from each row's PricingOutcome: a batch has a few distinct outcomes, so each row's
    outcome number is found once and every column is a byte translation of it."""
    distinct = list(dict.fromkeys(outcomes))
    if len(distinct) > 255:  # not a real batch; plain strings then
        return {name: (_labels if name != "pricing_note" else _strings)([getattr(o, field) for o in outcomes])
                for name, field in OUTCOME_COLUMNS.items()}
    number = {o: i for i, o in enumerate(distinct)}
    rows = bytes(map(number.__getitem__, outcomes))
    return {name: _grouped(rows, [getattr(o, field) for o in distinct]) for name, field in OUTCOME_COLUMNS.items()}


OUTCOME_COLUMNS = {"pricing_status": "status", "pricing_note": "note", "price_source": "source",
                   "price_version": "version", "cost_basis": "basis"}


def _sums(columns: Sequence[Sequence[int]], rows: int) -> list[int]:
    """Row-wise sums of whole columns, one C-level ``map(add)`` per column that is not all zeros (a batch
    rarely has audio, image or 1-hour cache tokens: those columns add nothing)."""
    live = [column for column in columns if any(column)]
    if not live:
        return [0] * rows
    total = live[0]
    for column in live[1:]:
        total = list(map(add, total, column))
    return list(total)


def _amounts(components: Sequence[tuple[int | None, ...]], references: Sequence[int | None],
             ) -> dict[str, tuple[str, bytes]]:
    """The amount columns: the 11 class components, their sums (input, output, total) and the reference."""
    by_class = list(zip(*components, strict=True))
    if any(map(is_, components, repeat(NO_COMPONENTS))):  # some unpriced rows: their amounts are NULL
        nullable: dict[str, Sequence[int | None]] = {
            f"{c}_cost_usd": values for c, values in zip(CLASSES, by_class, strict=True)}
        nullable |= {
            "cost_usd": [components_sum(c) for c in components],
            "input_cost_usd": [components_sum(c, INPUT_PART) for c in components],
            "output_cost_usd": [components_sum(c, OUTPUT_PART) for c in components],
        }
        return {name: _money(values) for name, values in nullable.items()} | {"reference_cost_usd": _money(references)}
    priced = cast("list[tuple[int, ...]]", by_class)  # every row is priced past this point
    amounts: dict[str, Sequence[int]] = {f"{c}_cost_usd": values for c, values in zip(CLASSES, priced, strict=True)}
    n = len(components)
    inputs, outputs = _sums(priced[INPUT_PART], n), _sums(priced[OUTPUT_PART], n)
    total = _sums([inputs, outputs, priced[-1]], n)
    amounts |= {"cost_usd": total, "input_cost_usd": inputs, "output_cost_usd": outputs}
    # Every amount is a sum of non-negative components or one of them: the total bounds them all.
    if min(map(min, priced)) < 0:
        return {name: _money(values) for name, values in amounts.items()} | {"reference_cost_usd": _money(references)}
    wire = native.decimal_type(total)
    not_null = bytes(len(total))
    columns = {name: (f"Nullable({wire})", not_null + native.decimals(values, wire))
               for name, values in amounts.items()}
    return columns | {"reference_cost_usd": _money(references)}


def cost_block(batch: Batch, shared: dict[str, tuple[str, bytes]]) -> native.Block:
    n = len(batch.events)
    components, references, outcomes = zip(*batch.charges, strict=True)
    own: dict[str, tuple[str, bytes]] = {
        **_amounts(components, references), **_outcome_columns(outcomes),
        "rating_version": ("UInt64", bytes(8 * n)),
        "priced_at": ("DateTime64(3, 'UTC')", native.uint([ticks(batch.priced_at)] * n, "q")),
    }
    block = native.Block(n)
    for name in COST_COLUMNS:
        block.add(name, *(own.get(name) or shared[name]))
    return block


def insert_batch(client: Client, batch: Batch, tables: tuple[str, str] = ("usage_events", "usage_costs")) -> None:
    """Events first, then their priced rows; each insert is idempotent under retry by its token."""
    if not batch.events:
        return
    token = dedup_token(batch)
    events, shared = event_block(batch)
    costs = cost_block(batch, shared)
    client.raw_insert(tables[0], events.names, events.to_bytes(), fmt="Native",
                      settings={**INSERT_SETTINGS, "insert_deduplication_token": token + ":events"})
    client.raw_insert(tables[1], costs.names, costs.to_bytes(), fmt="Native",
                      settings={**INSERT_SETTINGS, "insert_deduplication_token": token + ":costs"})
