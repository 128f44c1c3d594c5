"""Exact hourly rollups: reports read them for clean hours and raw rows with ``FINAL`` for the rest.

Why not a materialized view that sums on insert: the ledger is at-least-once (a redelivered batch is inserted
twice) and re-rating inserts a new version of a priced row; ``FINAL`` collapses both, an insert-time sum would
count both. So (``schemas/clickhouse/0010_hourly_rollups.sql``):

1. Insert-time views on ``usage_costs``, ``usage_events`` and ``gpu_cost_periods`` only *mark* the hours an
   insert touched (``rollup_marks``: hour, time of the mark). A GPU period version marks every hour from its
   start until now (the old and new versions of a period share their start).
2. :func:`refresh` (the rollup job; the pricer runs it every ``AIMETER_ROLLUP_INTERVAL_S`` off its insert
   path, ``aimeter reprice`` after writing) takes every complete hour that is not clean, notes the newest mark
   of each, recomputes them from ``FINAL`` (``usage_costs``, ``gpu_cost_allocation``, ``usage_events``) and
   writes the rows under a new version, then records (hour, version, newest mark seen) in ``rollup_hours``.
3. An hour is *clean* (``rollup_clean_hours``) when a version was computed after its newest mark. Readers
   (:class:`Span`) take rollup rows of that version for clean whole hours of their window, and raw rows with
   ``FINAL`` for everything else: partial hours at the window's edges, the current hour, hours dirtied since
   the last run. A raw read starts at the first hour that is not clean, so its cost is the dirty tail, not
   the window.

Exact at every moment: a mark's time is taken when its view runs, after the block is visible in the table
(ClickHouse writes the table, then its views; measured on chDB with several writers at once:
tests/integration/test_rollup_race.py). So a row the job's FINAL read missed carries a mark newer than every mark
the job noted before reading, and its hour falls back to raw rows until the next job. Also while a query runs: a
query reads the set of clean hours once (:attr:`Span.snapshot`) and splits every hour by that one reading, so an
hour the job finishes, or an insert dirties, mid-query is read from one side
(tests/integration/test_rollup_snapshot.py). Sums are Decimal(38, 12) and UInt64, so the order of addition changes
nothing. Hours before the first mark hold nothing. Sub-hour buckets (a Grafana interval that is not a whole number
of hours) cannot use hourly rows: such a query passes ``ok`` = false and reads raw.

What is rolled up, and how exactly:

* ``usage_rollup``: per hour and every dimension in :data:`DIMENSIONS`, the priced rows' token classes, costs
  and counts ('cost'), the GPU allocation ('gpu'), and attempts per hour ('events'). Exact.
* ``usage_rollup_teams`` (``0012_team_rollup.sql``): the same 'cost' and 'gpu' sums without the user and key
  dimensions, summed from usage_rollup's rows of the same version in the same run (so clean together), 4-6x fewer
  rows; every reader that names neither a user nor a key reads it (:func:`rollup_table`). Exact.
* ``ops_rollup`` (``0011_ops_rollup.sql``): the Gateway operations panels from ``usage_events FINAL`` per hour,
  team, project, backend, served model, deployment, status, HTTP status and stream. Attempts and token sums are
  exact; latency, time to first token and pipeline lag are ``quantilesBFloat16`` states (histograms of values
  with 8 significant bits: within 1/128 of the value an exact quantile picks), merged by adding counts, so the
  panels give exactly what ``quantilesBFloat16`` over the raw rows gives. The maximum lag is exact.

The job is not on the pricer's insert path: the pricer runs it on a thread with a client of its own (an embedded
chDB store can be opened by one process only, so in embedded mode it cannot be a process of its own); the
insert path pays only the marks (a DISTINCT hour per insert block; nothing measurable at the pricer's batch of
20,000, ``make bench-scale``). What the job costs is measured apart: CPU per hour it recomputes.

Retention: raw rows may get a TTL (``AIMETER_RAW_RETENTION_DAYS``, default 0 = kept forever); the job never
recomputes an hour older than the retention, whose raw rows may be gone, and the rollups keep everything.
It is off by default because re-rating (``aimeter reprice``) and GPU history corrections recompute from raw
rows: after the TTL, a window can no longer be re-rated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aimeter.reports.terms import NOT_PRICED, ZERO

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

DIMENSIONS = ("team", "project", "user", "api_key_id", "model", "backend", "provider", "deployment",
              "pricing_status")
# The first hour anything was marked or computed: no row is older (every insert marks its hours).
EPOCH = "(SELECT minOrNull(hour) FROM (SELECT hour FROM rollup_hours UNION ALL SELECT hour FROM rollup_marks))"
# Per priced row: what cache reads saved against the row's own uncached input rate (the Overview panel).
CACHE_READ_SAVINGS = f"""if(deployment = 'proprietary' AND pricing_status = 'priced' AND cache_read_input_tokens > 0
       AND greatest(toInt64(input_tokens) - cache_read_input_tokens - cache_creation_input_tokens
                    - input_audio_tokens - input_image_tokens, 0) > 0,
    ifNull(input_text_cost_usd, {ZERO}) * cache_read_input_tokens
        / greatest(toInt64(input_tokens) - cache_read_input_tokens - cache_creation_input_tokens
                   - input_audio_tokens - input_image_tokens, 0)
        - ifNull(cache_read_cost_usd, {ZERO}),
    {ZERO})"""
# usage_rollup column -> its value over one group of usage_costs FINAL rows.
COST_SUMS: dict[str, str] = {
    "requests": "count()",
    "input_tokens": "sum(input_tokens)",
    "cache_read_input_tokens": "sum(cache_read_input_tokens)",
    "cache_creation_input_tokens": "sum(cache_creation_input_tokens)",
    "output_tokens": "sum(output_tokens)",
    "reasoning_output_tokens": "sum(reasoning_output_tokens)",
    "priced_requests": "count(cost_usd)",
    "cost_usd": f"sum(ifNull(cost_usd, {ZERO}))",
    "proprietary_usd": f"sum(if(deployment = 'self_hosted', {ZERO}, ifNull(cost_usd, {ZERO})))",
    "reference_usd": f"sum(if(deployment = 'self_hosted', ifNull(reference_cost_usd, {ZERO}), {ZERO}))",
    "unpriced_requests": f"countIf(pricing_status IN {NOT_PRICED})",
    "cache_read_savings_usd": f"sum({CACHE_READ_SAVINGS})",
}
CLEAN = "rollup_clean_hours"


def _hour(expr: str) -> str:
    return f"toDateTime64(toStartOfHour({expr}), 3, 'UTC')"


@dataclass(frozen=True)
class Span:
    """How a query over ``[since, until)`` (SQL expressions) splits between rollup rows and raw rows.

    ``first`` .. ``last`` are the whole hours inside the window; ``head_end`` ends the partial first hour;
    ``tail_from`` is the first whole hour that is not clean (or ``last``), from where raw rows are read.
    ``ok`` is an SQL condition; when false every hour reads raw (e.g. a sub-hour Grafana bucket)."""

    since: str
    until: str
    ok: str = "1"

    @property
    def first(self) -> str:
        return f"toDateTime64(toStartOfHour({self.since} - toIntervalMillisecond(1)) + toIntervalHour(1), 3, 'UTC')"

    @property
    def last(self) -> str:
        return _hour(self.until)

    @property
    def snapshot(self) -> str:
        """(hour, version) of the clean whole hours of the window, as one array: the only read of the clean set.

        Why one: the job makes an hour clean, and an insert makes it dirty, at any moment, also while a query
        runs. Had the rolled part, the raw part and the tail each read the view, an hour could be clean to one
        and dirty to another and be read twice or not at all. The engine evaluates a scalar subquery of the
        same text once per query (also inside other subqueries), so every use of this text sees one state."""
        return (f"(SELECT groupArray((hour, version)) FROM {CLEAN} WHERE hour >= {self.first} "  # noqa: S608
                f"AND hour < {self.last} AND {self.ok})")

    @property
    def clean(self) -> str:
        """(hour, version) of the clean whole hours of the window (for ``IN``)."""
        return f"(SELECT arrayJoin({self.snapshot}))"

    @property
    def clean_hours(self) -> str:
        """The clean whole hours of the window (for ``IN``)."""
        return f"(SELECT arrayJoin(arrayMap(c -> c.1, {self.snapshot})))"

    @property
    def head_end(self) -> str:
        return f"least({self.first}, {self.until})"

    @property
    def tail_from(self) -> str:
        hours = (f"SELECT {self.first} + toIntervalHour(number) AS h FROM numbers(toUInt64(greatest(0, "  # noqa: S608
                 f"dateDiff('hour', {self.first}, {self.last}))))")
        dirty = (f"(SELECT ifNull(minOrNull(h), {self.last}) FROM ({hours}) WHERE h >= {EPOCH} "  # noqa: S608
                 f"AND h NOT IN {self.clean_hours})")
        return f"greatest({dirty}, {self.head_end})"

    def raw(self, col: str) -> str:
        """Raw rows (time column ``col``, already inside the window) that no clean hour's rollup holds."""
        return (f"({col} < {self.head_end} OR {col} >= {self.tail_from}) "
                f"AND toStartOfHour({col}) NOT IN {self.clean_hours}")

    def raw_allocation(self, partial_head: bool) -> str:
        """The GPU allocation view for what no clean hour's rollup holds (filter its rows with ``raw("hour")``): the
        partial first hour and the raw tail in one view (planning one costs ~0.1 s CPU whatever it reads), or the
        tail alone when the window starts on an hour."""
        if partial_head:
            return allocation_edges(self.since, self.head_end, self.tail_from, self.until)
        return allocation(self.tail_from, self.until)

    def rolled(self, col: str = "hour") -> str:
        """Rollup rows of the clean whole hours, at the version each hour's state points at."""
        return f"{col} >= {self.first} AND {col} < {self.last} AND ({col}, version) IN {self.clean}"


def allocation(since: str, until: str) -> str:
    return f"gpu_cost_allocation(since = {since}, until = {until})"


def allocation_edges(since: str, head_end: str, tail_from: str, until: str) -> str:
    """The allocation over [since, head_end) and [tail_from, until) in one view (0016_gpu_allocation_edges.sql):
    planning the view costs ~0.1 s CPU whatever it reads, so a window's head and tail are one call, not two."""
    return (f"gpu_cost_allocation_edges(since = {since}, head_end = {head_end}, tail_from = {tail_from}, "
            f"until = {until})")


# --- the rollup job -------------------------------------------------------------------------------------------

TARGETS_SQL = f"""
SELECT h, h IN (SELECT hour FROM rollup_marks) OR h IN (
    SELECT toStartOfHour(effective_from) + toIntervalHour(arrayJoin(range(toUInt64(greatest(0, dateDiff('hour',
        toStartOfHour(effective_from), least(ifNull(effective_to, {{end:DateTime('UTC')}}), {{end:DateTime('UTC')}}))
        + 1)))))
    FROM gpu_cost_periods FINAL WHERE is_deleted = 0) AS busy
FROM (
    SELECT toDateTime(greatest(ifNull({EPOCH}, {{end:DateTime('UTC')}}), {{keep:DateTime('UTC')}})
                      + toIntervalHour(number), 'UTC') AS h
    FROM numbers(toUInt64(greatest(0, dateDiff('hour',
        greatest(ifNull({EPOCH}, {{end:DateTime('UTC')}}), {{keep:DateTime('UTC')}}), {{end:DateTime('UTC')}}))))
)
WHERE h NOT IN (SELECT hour FROM {CLEAN})
ORDER BY h
"""  # noqa: S608 - fixed text; values are parameters

MARKS_SQL = """
SELECT hour, max(marked_at) FROM rollup_marks
WHERE hour >= {lo:DateTime('UTC')} AND hour < {hi:DateTime('UTC')} GROUP BY hour
"""
_IN_CHUNK = ("started_at >= {lo:DateTime('UTC')} AND started_at < {hi:DateTime('UTC')} "
             "AND toStartOfHour(started_at) IN {hours:Array(DateTime('UTC'))}")
_HEAD = "hour, version, source"
COST_ROLLUP_SQL = f"""
INSERT INTO usage_rollup ({_HEAD}, {', '.join(DIMENSIONS)}, {', '.join(COST_SUMS)})
SELECT toStartOfHour(started_at) AS hour, {{version:UInt64}}, 'cost', {', '.join(DIMENSIONS)},
       {', '.join(COST_SUMS.values())}
FROM usage_costs FINAL
WHERE {_IN_CHUNK}
GROUP BY hour, {', '.join(DIMENSIONS)}
"""  # noqa: S608
GPU_ROLLUP_SQL = f"""
INSERT INTO usage_rollup ({_HEAD}, team, project, user, model, backend, provider, deployment, gpu_usd)
SELECT hour, {{version:UInt64}}, 'gpu', team, project, user, model, backend, provider, deployment, sum(cost_usd)
FROM {allocation("{lo:DateTime64(3, 'UTC')}", "{hi:DateTime64(3, 'UTC')}")}
WHERE hour IN {{hours:Array(DateTime('UTC'))}}
GROUP BY hour, team, project, user, model, backend, provider, deployment
"""  # noqa: S608
TEAM_DIMENSIONS = tuple(d for d in DIMENSIONS if d not in ("user", "api_key_id"))
TEAM_SUMS = (*COST_SUMS, "gpu_usd")
TEAM_ROLLUP_SQL = f"""
INSERT INTO usage_rollup_teams ({_HEAD}, {', '.join(TEAM_DIMENSIONS)}, {', '.join(TEAM_SUMS)})
SELECT hour, version, source, {', '.join(TEAM_DIMENSIONS)}, {', '.join(f'sum({c})' for c in TEAM_SUMS)}
FROM usage_rollup
WHERE version = {{version:UInt64}} AND source IN ('cost', 'gpu') AND hour IN {{hours:Array(DateTime('UTC'))}}
GROUP BY hour, version, source, {', '.join(TEAM_DIMENSIONS)}
"""  # noqa: S608
# Identifiers only usage_rollup has: a reader naming one (a key, an owner, a filter) cannot use usage_rollup_teams.
WIDE_ONLY = re.compile(r"\b(user|api_key_id)\b")


def rollup_table(*sql: str) -> str:
    """The smallest rollup table that holds every column the given SQL fragments name."""
    return "usage_rollup" if any(WIDE_ONLY.search(s) for s in sql) else "usage_rollup_teams"


# The Gateway operations panels' values per attempt (usage_events), shared by the job and the panels' raw part.
QUANTILES = "quantilesBFloat16(0.5, 0.95, 0.99)"
EVENT_MODEL = "if(model_served != '', model_served, model_requested)"
LATENCY_MS = "toFloat64(dateDiff('millisecond', started_at, ended_at))"
TTFT_MS = "toFloat64(dateDiff('millisecond', started_at, first_token_at))"
LAG_S = "dateDiff('millisecond', ended_at, ingested_at) / 1000"
OPS_DIMENSIONS = ("team", "project", "backend", "model", "deployment", "status", "http_status", "stream")
OPS_SUMS: dict[str, str] = {
    "attempts": "count()",
    "input_tokens": "sum(input_tokens)",
    "output_tokens": "sum(output_tokens)",
    "latency_ms": f"{QUANTILES.replace('(', 'State(', 1)}({LATENCY_MS})",
    "timed_streams": "countIf(first_token_at IS NOT NULL)",
    "ttft_ms": f"{QUANTILES.replace('(', 'StateIf(', 1)}(assumeNotNull({TTFT_MS}), first_token_at IS NOT NULL)",
    "lag_s": f"{QUANTILES.replace('(', 'State(', 1)}({LAG_S})",
    "max_lag_s": f"max({LAG_S})",
}
OPS_ROLLUP_SQL = f"""
INSERT INTO ops_rollup (hour, version, {', '.join(OPS_DIMENSIONS)}, {', '.join(OPS_SUMS)})
SELECT toStartOfHour(started_at) AS hour, {{version:UInt64}}, team, project, backend, {EVENT_MODEL} AS served,
       deployment, status, http_status, stream, {', '.join(OPS_SUMS.values())}
FROM usage_events FINAL
WHERE {_IN_CHUNK}
GROUP BY hour, team, project, backend, served, deployment, status, http_status, stream
"""  # noqa: S608
_OPS_MERGED = {c: (f"sum({c})" if c not in ("latency_ms", "ttft_ms", "lag_s", "max_lag_s") else
                   "max(max_lag_s)" if c == "max_lag_s" else f"{QUANTILES.replace('(', 'MergeState(', 1)}({c})")
               for c in OPS_SUMS}
OPS_ALL_SQL = f"""
INSERT INTO ops_rollup_all (hour, version, status, http_status, stream, {', '.join(_OPS_MERGED)})
SELECT hour, version, status, http_status, stream, {', '.join(_OPS_MERGED.values())}
FROM ops_rollup
WHERE version = {{version:UInt64}} AND hour IN {{hours:Array(DateTime('UTC'))}}
GROUP BY hour, version, status, http_status, stream
"""  # noqa: S608
EVENTS_ROLLUP_SQL = f"""
INSERT INTO usage_rollup ({_HEAD}, requests)
SELECT toStartOfHour(started_at) AS hour, {{version:UInt64}}, 'events', count()
FROM usage_events FINAL
WHERE {_IN_CHUNK}
GROUP BY hour
"""  # noqa: S608


@dataclass(frozen=True)
class Refreshed:
    """What one job run did: hours computed from FINAL, empty hours recorded, the version written."""

    computed: int
    empty: int
    version: int


def _chunks(hours: Sequence[datetime], max_span: timedelta) -> Iterator[list[datetime]]:
    """Sorted hours cut into runs no longer than ``max_span`` (one INSERT ... SELECT per run and source)."""
    run: list[datetime] = []
    for hour in hours:
        if run and hour - run[0] >= max_span:
            yield run
            run = []
        run.append(hour)
    if run:
        yield run


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def refresh(client: Client, now: datetime | None = None, *, retention_days: int = 0,
            max_span: timedelta = timedelta(days=7)) -> Refreshed:
    """Recompute every complete hour that is not clean (see the module docstring); returns what it did."""
    now = now or datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)  # hours before this one are complete
    keep = end - timedelta(days=retention_days) if retention_days else datetime(1970, 1, 1, tzinfo=UTC)
    rows = client.query(TARGETS_SQL, parameters={"end": end, "keep": keep}).result_rows
    busy = [_utc(h) for h, has_rows in rows if has_rows]
    empty = [_utc(h) for h, has_rows in rows if not has_rows]
    previous = client.command("SELECT max(version) FROM rollup_hours")
    version = max(int(str(previous or 0)) + 1, time.time_ns() // 1000)
    state: list[list[Any]] = [[h, version, datetime(1970, 1, 1, tzinfo=UTC)] for h in empty]
    for run in _chunks(busy, max_span):
        params = {"lo": run[0], "hi": run[-1] + timedelta(hours=1), "hours": run, "version": version}
        marks = {_utc(h): m for h, m in client.query(MARKS_SQL, parameters=params).result_rows}
        for sql in (COST_ROLLUP_SQL, GPU_ROLLUP_SQL, EVENTS_ROLLUP_SQL, OPS_ROLLUP_SQL, OPS_ALL_SQL,
                    TEAM_ROLLUP_SQL):
            client.command(sql, parameters=params)
        state += [[h, version, marks.get(h, datetime(1970, 1, 1, tzinfo=UTC))] for h in run]
    if state:
        client.insert("rollup_hours", state, column_names=["hour", "version", "covered_mark"])
    return Refreshed(len(busy), len(empty), version)


RAW_TABLES = ("usage_events", "usage_costs", "usage_cost_versions")


def apply_retention(client: Client, days: int) -> None:
    """TTL on the raw ledger tables (the rollups keep everything); the job then never recomputes older hours."""
    for table in RAW_TABLES:
        client.command(f"ALTER TABLE {table} MODIFY TTL toDateTime(started_at) + toIntervalDay({int(days)})")
