"""The rollup job while rows are being inserted, and `--since 1h` windows around hour boundaries, on the real engine.

The job notes each hour's newest mark, then reads FINAL; an hour is clean while no mark is newer than the one
noted. That is exact if a mark's *value* is taken after its rows are visible: then rows the job's read missed were
committed after it noted the marks, so their mark is newer and the hour reads raw again. Measured on chDB: the
view takes now64() when the block reaches it, after the table holds the block (a single-row insert's rows were
visible 0.8 ms before its mark's value; no poll begun after a block's mark value missed that block, 30 blocks
of 200,000 rows). These tests check the outcome rather than the mechanism: a report read with rollups equals
the same report over raw rows with FINAL, while writers (two, as two pricers on one server), the job and
readers run at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rows import build_batch
from aimeter.pricer.write import insert_batch
from aimeter.reports import rollup
from aimeter.reports.sql import Grouping, aggregate_query, bound_window
from aimeter.store.migrations import migrate
from tests.integration.test_finance_numbers import call, config

pytestmark = pytest.mark.integration

DATABASE = "rollup_race"
HOUR = datetime(2026, 11, 20, 10, tzinfo=UTC)
TABLES = ("usage_events", "usage_costs", "rollup_marks", "rollup_hours", "usage_rollup", "usage_rollup_teams",
          "ops_rollup", "ops_rollup_all")
BOOK = PriceBook(config("gpu-race"))


@pytest.fixture(scope="module")
def store(chdb_path: Path, chdb_client: Client) -> Client:
    chdb_client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client = _client(chdb_path)
    migrate(client)
    return client


def _empty(client: Client) -> None:
    for table in TABLES:
        client.command(f"TRUNCATE TABLE {table}")


def _client(chdb_path: Path) -> Client:
    """A connection of its own to the session's engine: the writers, the job and the reader each have one."""
    return clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=DATABASE)


def _per_team(client: Client, since: datetime, until: datetime, *, rollups: bool) -> dict[str, int]:
    """Requests per team over [since, until): through the rollups, or over raw rows with FINAL only."""
    window = dataclasses.replace(bound_window(since, until), rollups=rollups)
    sql, params = aggregate_query(["requests"], window, grouping=Grouping(key="team", key_name="team"))
    return {team: int(n) for team, n in client.query(sql, parameters=params).result_rows if n}


def _write(client: Client, team: str, times: list[datetime]) -> None:
    """One batch the way the pricer writes it (build_batch, then insert_batch: events, then priced rows)."""
    batch = build_batch([call(at, team, inp=1000).model_dump_json().encode() for at in times], BOOK, times[0])
    assert not batch.poison, batch.poison
    insert_batch(client, batch)


SLOW_INSERT = f"""
INSERT INTO usage_costs (event_id, started_at, ended_at, team, model, deployment, pricing_status, input_tokens,
                         cost_usd, rating_version)
SELECT generateUUIDv4(number), toDateTime64('{HOUR:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalMillisecond(number),
       toDateTime64('{HOUR:%Y-%m-%d %H:%M:%S}', 3, 'UTC') + toIntervalMillisecond(number),
       'slow-writer', 'gpt-4o', 'proprietary', 'priced', 10, toDecimal128(0.000025, 12), 0
FROM numbers({{n:UInt64}})
"""


def test_a_job_while_a_long_insert_is_in_flight_leaves_the_hour_exact(store: Client, chdb_path: Path):
    """Writer A starts a long insert into a complete hour; writer B inserts one row there and commits first; the
    job runs before A commits. The hour must not be clean without A's rows."""
    _empty(store)
    slow, quick, job = _client(chdb_path), _client(chdb_path), _client(chdb_path)
    n = 400_000
    done: dict[str, float] = {}

    def insert_slowly() -> None:
        slow.command(SLOW_INSERT, parameters={"n": n})
        done["slow"] = time.monotonic()

    writer = threading.Thread(target=insert_slowly)
    writer.start()
    time.sleep(0.2)  # A is still writing (it takes seconds)
    _write(quick, "quick-writer", [HOUR + timedelta(minutes=59)])
    rollup.refresh(job, now=HOUR + timedelta(hours=2))
    job_done = time.monotonic()
    writer.join()
    if done["slow"] < job_done:
        pytest.skip(f"the insert of {n:,} rows committed before the job ended: the interleaving was not set up")
    hour = (HOUR, HOUR + timedelta(hours=1))
    assert _per_team(store, *hour, rollups=False) == {"slow-writer": n, "quick-writer": 1}
    assert _per_team(store, *hour, rollups=True) == {"slow-writer": n, "quick-writer": 1}
    rollup.refresh(job, now=HOUR + timedelta(hours=2))  # and once the job has seen A's rows too
    assert _per_team(store, *hour, rollups=True) == {"slow-writer": n, "quick-writer": 1}


def test_two_writers_the_job_and_a_reader_at_once_agree_with_raw_final(store: Client, chdb_path: Path):
    """Rows are only added (new event ids), so a rolled-up read taken between two raw reads lies between them: a
    read that missed rows (an hour clean without them) is below the raw read before it; double counting is above
    the raw read after it."""
    _empty(store)
    window = (HOUR, HOUR + timedelta(hours=3))  # three complete hours: the job computes them over and over
    stop = threading.Event()
    errors: list[BaseException] = []
    jobs, written = [0], {"writer-a": 0, "writer-b": 0}
    deadline = time.monotonic() + 90  # a loaded box writes fewer batches, never hangs the suite

    def guarded(work):
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                stop.set()
        return threading.Thread(target=run)

    def writer(team: str, seed: int) -> None:
        client = _client(chdb_path)
        for i in range(60):
            if stop.is_set() or time.monotonic() > deadline:
                return
            at = HOUR + timedelta(seconds=(seed * 7919 + i * 977) % (3 * 3600))
            _write(client, team, [at, at + timedelta(milliseconds=1)])
            written[team] += 2

    def job() -> None:
        client = _client(chdb_path)
        while not stop.is_set():
            rollup.refresh(client, now=HOUR + timedelta(hours=4))
            jobs[0] += 1

    threads = [guarded(lambda: writer("writer-a", 1)), guarded(lambda: writer("writer-b", 2)), guarded(job)]
    for thread in threads:
        thread.start()
    reader, reads = _client(chdb_path), 0
    while any(t.is_alive() for t in threads[:2]) and not stop.is_set():
        before = _per_team(reader, *window, rollups=False)
        rolled = _per_team(reader, *window, rollups=True)
        after = _per_team(reader, *window, rollups=False)
        reads += 1
        for team in ("writer-a", "writer-b"):
            assert before.get(team, 0) <= rolled.get(team, 0) <= after.get(team, 0), (team, before, rolled, after)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert reads >= 3, reads  # the reader, the job and the writers really overlapped
    assert jobs[0] >= 3, jobs
    rollup.refresh(store, now=HOUR + timedelta(hours=4))
    assert _per_team(store, *window, rollups=True) == _per_team(store, *window, rollups=False) == written
    clean = store.command("SELECT count() FROM rollup_clean_hours")
    assert int(str(clean)) >= 3  # the final read came from rollup rows, not only raw ones


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(now_ms=st.integers(-3_000, 3_000), job_ms=st.one_of(st.none(), st.integers(-3_000, 0)),
       ages_ms=st.lists(st.integers(0, 3_700_000), min_size=1, max_size=6))
def test_since_1h_around_an_hour_boundary_reads_what_raw_reads(store: Client, now_ms: int, job_ms: int | None,
                                                               ages_ms: list[int]):
    """`--since 1h` at a `now` within 3 s of an hour boundary, rows up to 61 min old, the job run just before now
    (or not at all): the rolled-up read equals raw FINAL, and every row inside [now - 1 h, now) is counted."""
    _empty(store)
    now = HOUR + timedelta(hours=2, milliseconds=now_ms)
    times = [now - timedelta(milliseconds=age) for age in ages_ms]
    for i, at in enumerate(times):
        _write(store, f"team-{i}", [at])
    if job_ms is not None:
        rollup.refresh(store, now=now + timedelta(milliseconds=job_ms))
    since = now - timedelta(hours=1)
    expected = {f"team-{i}": 1 for i, at in enumerate(times) if since <= at.replace(
        microsecond=at.microsecond // 1000 * 1000) < now}
    assert _per_team(store, since, now, rollups=False) == expected
    assert _per_team(store, since, now, rollups=True) == expected
