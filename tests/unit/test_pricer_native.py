"""The pricer's Native-format inserts land in ClickHouse exactly what clickhouse-connect's row inserts of the
classic rows land: every column, bit for bit, and exact Decimal sums; a retried batch is skipped."""

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimeter.pricer import native
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, build_batch
from aimeter.pricer.write import insert_batch
from tests.support.pricer_rows import cost_rows, event_rows
from tests.unit.test_pricer_fastpath import BOOKS, events, sample

FAST, CLASSIC = ("pricer_fast_events", "pricer_fast_costs"), ("pricer_classic_events", "pricer_classic_costs")
PRICED_AT = datetime(2026, 12, 1, 8, 30, 15, 123999, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(metering_store):
    """The session's engine with four tables of this test's own, shaped like usage_events and usage_costs."""
    for events_table, costs_table in (FAST, CLASSIC):
        metering_store.command(f"CREATE TABLE IF NOT EXISTS {events_table} AS usage_events")
        metering_store.command(f"CREATE TABLE IF NOT EXISTS {costs_table} AS usage_costs")
    return metering_store


def stored(client, table: str, columns: list[str], ids: list[str]) -> list[tuple]:
    listed = ", ".join(f"toUUID('{i}')" for i in ids)
    cols = ", ".join(f"`{c}`" for c in columns)
    sql = f"SELECT {cols} FROM {table} FINAL WHERE event_id IN ({listed}) ORDER BY event_id"
    return client.query(sql).result_rows


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(st.lists(events(), min_size=1, max_size=120), st.sampled_from(BOOKS))
def test_native_insert_stores_what_the_row_insert_stores(store, batch_events, book):
    batch_events = [e.model_copy(update={"event_id": uuid4()}) for e in batch_events]  # new rows every example
    raws = [e.model_dump_json().encode() for e in batch_events]
    batch = build_batch(raws, book, PRICED_AT)
    assert not batch.poison
    insert_batch(store, batch, tables=FAST)
    store.insert(CLASSIC[0], list(event_rows(batch)), column_names=EVENT_COLUMNS)
    store.insert(CLASSIC[1], list(cost_rows(batch)), column_names=COST_COLUMNS)
    ids = [str(e.event_id) for e in batch_events]
    for fast, classic, columns in ((FAST[0], CLASSIC[0], EVENT_COLUMNS), (FAST[1], CLASSIC[1], COST_COLUMNS)):
        assert stored(store, fast, columns, ids) == stored(store, classic, columns, ids)
        # Bit for bit in ClickHouse's own terms (no client-side conversion on the way out):
        text = [store.raw_query(f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM {t} FINAL WHERE event_id IN "
                                f"({', '.join(repr(i) for i in ids)}) ORDER BY event_id FORMAT TSV")
                for t in (fast, classic)]
        assert text[0] == text[1]
    sums = [store.command(f"SELECT toString(ifNull(sum(cost_usd), 0)) FROM {t} FINAL WHERE event_id IN "
                          f"({', '.join(repr(i) for i in ids)})") for t in (FAST[1], CLASSIC[1])]
    expected = sum((r[COST_COLUMNS.index("cost_usd")] or Decimal(0) for r in cost_rows(batch)), Decimal(0))
    assert Decimal(sums[0]) == Decimal(sums[1]) == expected


def test_a_retried_batch_is_not_inserted_twice(store):
    raws = [sample(i, event_id=f"0193a6f0-0000-7000-9000-{i:012x}").model_dump_json().encode() for i in range(30)]
    batch = build_batch(raws, BOOKS[0], PRICED_AT)
    insert_batch(store, batch, tables=FAST)
    insert_batch(store, build_batch(raws, BOOKS[0], PRICED_AT), tables=FAST)  # the same messages again
    ids = ", ".join(repr(e.event_id) for e in batch.events)
    for table in FAST:
        assert store.command(f"SELECT count() FROM {table} WHERE event_id IN ({ids})") == 30


def test_large_amounts_go_as_decimal128():
    assert native.decimal_type([1, None, 10**18 - 1]) == "Decimal(18, 12)"
    assert native.decimal_type([10**18]) == "Decimal(38, 12)"
    assert native.decimals([10**18, -(10**20)], "Decimal(38, 12)") == (
        (10**18).to_bytes(16, "little", signed=True) + (-(10**20)).to_bytes(16, "little", signed=True))


@pytest.mark.parametrize("values", [["a", "b", "a"], ["ünï", "", "x" * 300], ["same"] * 5, ["x" * 127, "y" * 127]])
def test_strings_are_length_prefixed_utf8(values):
    assert native.strings(values) == b"".join(native.leb128(len(v.encode())) + v.encode() for v in values)
