"""The hourly rollups are exact (issue 17): over generated ledger histories (redelivered duplicates, re-rated
versions, events arriving hours late, GPU period changes and corrections, rollup jobs at any point), every report
read with rollups equals the same report over raw rows with FINAL, to the last of the 12 decimal places.

The histories live in their own database of the session's engine, emptied before each example.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimeter.grafana.build import load_dashboards
from aimeter.grafana.macros import ALL, QueryContext, Variable, expand
from aimeter.reports import panels, panels_ops, rollup
from aimeter.reports.reconcile import reconcile_sql
from aimeter.reports.sql import (
    MEASURES,
    SPEND_DIMENSIONS,
    Grouping,
    Window,
    aggregate_query,
    bound_window,
    chargeback_query,
    daily_query,
    owner_of,
)
from aimeter.store.migrations import migrate

pytestmark = pytest.mark.integration

DATABASE = "rollup_property"
BASE = datetime(2026, 11, 10, tzinfo=UTC)
HOURS = 6
TABLES = ("usage_events", "usage_costs", "usage_cost_versions", "gpu_cost_periods", "gpu_cost_period_versions",
          "rollup_marks", "rollup_hours", "usage_rollup", "ops_rollup", "ops_rollup_all",
          "usage_rollup_teams")
ROUTES = [("proprietary", "openai", "openai", "gpt-4o"), ("proprietary", "anthropic", "anthropic", "claude"),
          ("self_hosted", "gpu-a", "vllm", "llama")]
WINDOWS = [(BASE + timedelta(minutes=30), BASE + timedelta(hours=4, minutes=10)),  # partial edges
           (BASE, BASE + timedelta(hours=HOURS)),  # whole hours
           (BASE + timedelta(hours=2, minutes=5), BASE + timedelta(hours=2, minutes=50))]  # inside one hour


@pytest.fixture(scope="module")
def store(chdb_path: Path, chdb_client: Client) -> Client:
    chdb_client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=DATABASE)
    migrate(client)
    return client


money = st.one_of(st.none(), st.decimals(min_value=0, max_value=50, places=12, allow_nan=False,
                                         allow_infinity=False))
event = st.fixed_dictionaries({
    "hour": st.integers(0, HOURS - 1), "second": st.integers(0, 3599), "ms": st.integers(0, 999),
    "team": st.sampled_from(["alpha", "beta", "idle-ish"]), "project": st.sampled_from(["p1", "p2"]),
    "user": st.sampled_from(["u1", "u2", ""]), "key": st.sampled_from(["k1", "k2"]),
    "route": st.sampled_from(ROUTES), "cost": money, "reference": money, "text_cost": money,
    "input": st.integers(0, 5000), "cached": st.integers(0, 5000), "output": st.integers(0, 3000),
    "unmetered": st.booleans(),
    # The gateway's side of the attempt (the operations panels): outcome, duration, first token, pipeline lag.
    "attempt": st.sampled_from([("ok", 200, False), ("ok", 200, True), ("upstream_error", 502, False),
                                ("timeout", 504, True)]),
    "duration_ms": st.integers(0, 120_000), "ttft_ms": st.one_of(st.none(), st.integers(0, 5000)),
    "lag_ms": st.integers(0, 90_000),
})
step = st.one_of(
    st.tuples(st.just("insert"), st.lists(event, min_size=1, max_size=6)),
    st.tuples(st.just("redeliver"), st.integers(0, 50)),
    st.tuples(st.just("reprice"), st.lists(st.tuples(st.integers(0, 200), money), min_size=1, max_size=4)),
    st.tuples(st.just("gpu"), st.tuples(st.integers(0, HOURS - 1), st.one_of(st.none(), st.integers(1, HOURS)),
                                        st.decimals(min_value=0, max_value=20, places=2), st.integers(1, 20000),
                                        st.booleans())),
    st.tuples(st.just("job"), st.none()),
)


class Ledger:
    """Writes the history's steps as the pricer, `aimeter reprice` and the GPU history would."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.batches: list[tuple[list[list[Any]], list[list[Any]]]] = []
        self.costs: list[list[Any]] = []  # the newest priced row of every event
        self.gpu_version = 0

    def insert(self, events: list[dict[str, Any]]) -> None:
        rows_e, rows_c = [], []
        for e in events:
            deployment, backend, provider, model = e["route"]
            at = BASE + timedelta(hours=e["hour"], seconds=e["second"], milliseconds=e["ms"])
            event_id = uuid.uuid4()
            cached = min(e["cached"], e["input"])
            status = "unmetered" if e["unmetered"] else ("unpriced" if e["cost"] is None else "priced")
            cost = None if status != "priced" else e["cost"]
            common = [event_id, at, at + timedelta(seconds=1), backend, provider, deployment, e["team"], e["project"],
                      e["user"], e["key"], e["input"], cached, e["output"]]
            status_, http_status, stream = e["attempt"]
            ended = at + timedelta(milliseconds=e["duration_ms"])
            first_token = None if not stream or e["ttft_ms"] is None else at + timedelta(milliseconds=e["ttft_ms"])
            rows_e.append([*common[:2], ended, *common[3:], model, model, status_, http_status, stream, first_token,
                           ended + timedelta(milliseconds=e["lag_ms"])])
            rows_c.append([*common, model, cost, e["reference"], e["text_cost"], e["text_cost"], status, 0])
        self._write(rows_e, rows_c)
        self.batches.append((rows_e, rows_c))
        self.costs += rows_c

    def _write(self, rows_e: list[list[Any]], rows_c: list[list[Any]]) -> None:
        head = ["event_id", "started_at", "ended_at", "backend", "provider", "deployment", "team", "project", "user",
                "api_key_id", "input_tokens", "cache_read_input_tokens", "output_tokens"]
        if rows_e:
            self.client.insert("usage_events", rows_e, column_names=[
                *head, "model_requested", "model_served", "status", "http_status", "stream", "first_token_at",
                "ingested_at"])
        self.client.insert("usage_costs", rows_c, column_names=[
            *head, "model", "cost_usd", "reference_cost_usd", "input_text_cost_usd", "cache_read_cost_usd",
            "pricing_status", "rating_version"])

    def redeliver(self, index: int) -> None:
        if self.batches:
            self._write(*self.batches[index % len(self.batches)])

    def reprice(self, changes: list[tuple[int, Decimal | None]]) -> None:
        if not self.costs:
            return
        rows = []
        for index, cost in changes:
            old = self.costs[index % len(self.costs)]
            new = [*old[:-2], "priced" if cost is not None else "unpriced", old[-1] + 1]
            new[14] = cost
            self.costs[index % len(self.costs)] = new
            rows.append(new)
        self._write([], rows)

    def gpu(self, start: int, end: int | None, usd: Decimal, tokens: int, deleted: bool) -> None:
        self.gpu_version += 1
        end_at = None if end is None or end <= start else BASE + timedelta(hours=end)
        self.client.insert("gpu_cost_periods", [["gpu-a", BASE + timedelta(hours=start), end_at, "H100", 1, usd,
                                                 Decimal(tokens), self.gpu_version, int(deleted)]],
                           column_names=["backend", "effective_from", "effective_to", "gpu_type", "gpu_count",
                                         "usd_per_hour", "tokens_per_hour", "version", "is_deleted"])


def run(client: Client, query: tuple[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    sql, params = query
    return sorted(client.query(sql, parameters=params).result_rows, key=repr)


def reports(window: Window, *, every: bool) -> list[tuple[str, dict[str, Any]]]:
    """The reports' builders over one window: spend by dimensions, chargeback by team and by project (owner
    team), daily by project; with ``every``, spend by each dimension and every other spend panel too."""
    dimensions = SPEND_DIMENSIONS if every else ("user",)
    out = [aggregate_query(list(MEASURES), window, grouping=Grouping(key=d, key_name=d)) for d in dimensions]
    out += [chargeback_query(by, window, owner=owner_of(by)) for by in ("team", "project")]
    out += [daily_query("project", window)]
    out += [(sql, dict(window.params)) for sql in panels.cost_panels(window)] if every else []
    return out


OPS_DASHBOARD = next(d for d in load_dashboards() if d["uid"] == "aimeter-gateway-ops")


def ops_context(since: datetime, until: datetime, interval: timedelta, team: str | None) -> QueryContext:
    variables = {v["name"]: Variable(v["name"], ALL if v.get("includeAll") else v["current"]["value"])
                 for v in OPS_DASHBOARD["templating"]["list"]}
    if team is not None:
        variables["team"] = Variable("team", (team,))
    return QueryContext(since, until, interval, variables)


def assert_ops_exact(client: Client, since: datetime, until: datetime, *, every: bool) -> None:
    """The Gateway operations panels (as the dashboard expands them) with ops_rollup equal them over raw rows:
    counts and token sums, and the quantilesBFloat16 quantiles (hourly states merge by adding counts). An hour
    bucket reads rollups; a 20-minute one cannot (raw); a team filter applies to both parts."""
    raw = dataclasses.replace(panels.GRAFANA_WINDOW, rollups=False)
    contexts = ((timedelta(hours=1), None), (timedelta(hours=1), "alpha"), (timedelta(minutes=20), None))
    for interval, team in contexts if every else contexts[:2]:
        ctx = ops_context(since, until, interval, team)
        for with_rollups, without in zip(panels_ops.ops_panels(), panels_ops.ops_panels(raw), strict=True):
            rolled = run(client, (expand(with_rollups, ctx), {}))
            assert rolled == run(client, (expand(without, ctx), {})), with_rollups[:300]


def assert_exact(client: Client, *, every: bool = False) -> None:
    for since, until in WINDOWS:
        rolled = bound_window(since, until)
        raw = dataclasses.replace(rolled, rollups=False)
        for with_rollups, without in zip(reports(rolled, every=every), reports(raw, every=every), strict=True):
            assert run(client, with_rollups) == run(client, without), with_rollups[0][:300]
        assert_ops_exact(client, since, until, every=every)
        params = {"since": since, "until": until}
        assert run(client, (reconcile_sql(), params)) == run(client, (reconcile_sql(rollups=False), params))
        every = False  # the other windows check the main reports only (each query plans the GPU view: ~0.15 s)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(history=st.lists(step, min_size=1, max_size=10))
def test_rollups_equal_final_over_raw_rows(store: Client, history: list[tuple[str, Any]]) -> None:
    for table in TABLES:
        store.command(f"TRUNCATE TABLE {table}")
    ledger = Ledger(store)
    last_job = max((i for i, (kind, _arg) in enumerate(history) if kind == "job"), default=-1)
    for i, (kind, arg) in enumerate(history):
        if kind == "insert":
            ledger.insert(arg)
        elif kind == "redeliver":
            ledger.redeliver(arg)
        elif kind == "reprice":
            ledger.reprice(arg)
        elif kind == "gpu":
            ledger.gpu(*arg)
        else:
            rollup.refresh(store)
        if i == last_job and i < len(history) - 1:
            assert_exact(store)  # hours dirtied after the last job read raw, the others their rollups
    rollup.refresh(store)
    dirty = store.command("SELECT count() FROM rollup_marks WHERE hour NOT IN (SELECT hour FROM rollup_clean_hours) "
                          "AND hour < toStartOfHour(now())")
    assert int(dirty) == 0  # every whole hour of the history is served by the rollups now (not the current one)
    assert_exact(store, every=True)


def test_a_clean_hour_is_read_from_the_rollup_only(store: Client) -> None:
    """Not a tautology: after a job, the raw part of a whole-hour query reads no row of a clean hour."""
    for table in TABLES:
        store.command(f"TRUNCATE TABLE {table}")
    ledger = Ledger(store)
    ledger.insert([{"hour": 1, "second": 5, "ms": 0, "team": "alpha", "project": "p1", "user": "u1", "key": "k1",
                    "route": ROUTES[0], "cost": Decimal("1.5"), "reference": None, "text_cost": None, "input": 10,
                    "cached": 0, "output": 5, "unmetered": False, "attempt": ("ok", 200, True), "duration_ms": 800,
                    "ttft_ms": 120, "lag_ms": 1500}])
    rollup.refresh(store)
    store.command("ALTER TABLE usage_costs UPDATE cost_usd = 999 WHERE 1 SETTINGS mutations_sync = 2")
    store.command("ALTER TABLE usage_events UPDATE http_status = 599 WHERE 1 SETTINGS mutations_sync = 2")
    ctx = ops_context(BASE, BASE + timedelta(hours=HOURS), timedelta(hours=1), None)
    raw_ops = dataclasses.replace(panels.GRAFANA_WINDOW, rollups=False)
    assert run(store, (expand(panels_ops.status_breakdown(), ctx), {})) == [("ok", 200, 1)]  # ops_rollup_all's
    alpha = ops_context(BASE, BASE + timedelta(hours=HOURS), timedelta(hours=1), "alpha")
    assert run(store, (expand(panels_ops.status_breakdown(), alpha), {})) == [("ok", 200, 1)]  # ops_rollup's
    assert run(store, (expand(panels_ops.status_breakdown(raw_ops), ctx), {})) == [("ok", 599, 1)]
    window = bound_window(BASE, BASE + timedelta(hours=HOURS))
    [[total]] = store.query(*aggregate_query(["cost_usd"], window)).result_rows
    assert total == Decimal("1.5")  # from the rollup: the (deliberately corrupted) raw row was not read
    [[raw]] = store.query(*aggregate_query(["cost_usd"], dataclasses.replace(window, rollups=False))).result_rows
    assert raw == Decimal("999")
    # Spend by team reads usage_rollup_teams, spend by user the wider usage_rollup (corrupted here).
    store.command("ALTER TABLE usage_rollup UPDATE cost_usd = 7 WHERE 1 SETTINGS mutations_sync = 2")
    by_team = aggregate_query(["cost_usd"], window, grouping=Grouping(key="team", key_name="team"))
    assert run(store, by_team) == [("alpha", Decimal("1.5"))]
    by_user = aggregate_query(["cost_usd"], window, grouping=Grouping(key="user", key_name="user"))
    assert run(store, by_user) == [("u1", Decimal("7"))]
