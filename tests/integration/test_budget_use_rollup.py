"""The Budget use per scope panel with the hourly rollups equals the same panel over raw rows with FINAL (issue 17),
row for row: over generated ledger histories (redelivered duplicates, re-rated versions, some to unpriced, events
arriving hours late, rollup jobs at any point) and budgets of every period in UTC and in half-hour and 45-minute
timezones, whose windows start inside the generated hours, with the range ending on an hour or inside one.

The histories live in their own database of the session's engine, emptied before each example.
"""

from __future__ import annotations

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

from aimeter.alerts.budget_table import COLUMNS, window_rows
from aimeter.budgets.model import Budget, Period, ScopeKind
from aimeter.grafana.build import load_dashboards
from aimeter.grafana.macros import ALL, QueryContext, Variable, expand
from aimeter.reports import rollup
from aimeter.reports.budget_use import budget_use_panel
from aimeter.reports.panels import VARIABLE_FILTERS
from aimeter.store.migrations import migrate
from tests.integration.test_rollup_exact import ROUTES, money

pytestmark = pytest.mark.integration

DATABASE = "budget_use_property"
# 16:00 UTC on Monday 30 November 2026, for ten hours: the day and month of Asia/Kolkata (UTC+5:30) start at 18:30
# UTC inside them, Asia/Kathmandu's (UTC+5:45) at 18:15, UTC's at midnight; the ISO week began that morning.
BASE = datetime(2026, 11, 30, 16, tzinfo=UTC)
HOURS = 10
TABLES = ("usage_events", "usage_costs", "usage_cost_versions", "rollup_marks", "rollup_hours", "usage_rollup",
          "usage_rollup_teams", "ops_rollup", "ops_rollup_all", "budget_windows")
ZONES = ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns")
VALUES = {ScopeKind.KEY: ("k1", "k2"), ScopeKind.TEAM: ("alpha", "beta"), ScopeKind.PROJECT: ("p1", "p2"),
          ScopeKind.USER: ("u1", "u2")}
# Always present, so every example has windows starting on a half hour and a 45-minute offset inside the history.
FIXED = [Budget("fixed-kolkata-day", ScopeKind.TEAM, "alpha", Decimal(5), Period.DAY, "Asia/Kolkata"),
         Budget("fixed-kathmandu-month", ScopeKind.KEY, "k1", Decimal(0), Period.MONTH, "Asia/Kathmandu"),
         Budget("fixed-utc-day", ScopeKind.USER, "u1", Decimal("0.5"), Period.DAY)]
SPEND = next(d for d in load_dashboards() if d["uid"] == "aimeter-spend")


@pytest.fixture(scope="module")
def store(chdb_path: Path, chdb_client: Client) -> Client:
    chdb_client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=DATABASE)
    migrate(client)
    return client


event = st.fixed_dictionaries({
    "hour": st.integers(0, HOURS - 1), "second": st.integers(0, 3599), "ms": st.integers(0, 999),
    "team": st.sampled_from(["alpha", "beta"]), "project": st.sampled_from(["p1", "p2"]),
    "user": st.sampled_from(["u1", "u2", ""]), "key": st.sampled_from(["k1", "k2"]),
    "route": st.sampled_from(ROUTES), "cost": money, "unmetered": st.booleans(),
})
# A job runs "now" at any point of the history: the hours before now's hour are complete, the rest stay raw.
moment = st.tuples(st.integers(0, HOURS + 1), st.integers(0, 59))
step = st.one_of(
    st.tuples(st.just("insert"), st.lists(event, min_size=1, max_size=8)),
    st.tuples(st.just("redeliver"), st.integers(0, 50)),
    st.tuples(st.just("reprice"), st.lists(st.tuples(st.integers(0, 200), money), min_size=1, max_size=4)),
    st.tuples(st.just("job"), moment),
)
budget = st.builds(lambda scope, index, period, zone, amount: (scope, VALUES[scope][index], period, zone, amount),
                   st.sampled_from(list(ScopeKind)), st.integers(0, 1), st.sampled_from(list(Period)),
                   st.sampled_from(ZONES), st.sampled_from([Decimal(0), Decimal("0.25"), Decimal(3), Decimal(40)]))
# The range's end: on an hour, or inside one (to the millisecond).
range_end = st.tuples(st.integers(1, HOURS), st.one_of(st.just(0), st.integers(1, 3_599_999)))


class Costs:
    """Writes priced rows as the pricer (a redelivered batch again) and `aimeter reprice` (a new version) would."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.batches: list[list[list[Any]]] = []
        self.rows: list[list[Any]] = []  # the newest version of every event's row

    def insert(self, events: list[dict[str, Any]]) -> None:
        rows = []
        for e in events:
            deployment, backend, _provider, model = e["route"]
            at = BASE + timedelta(hours=e["hour"], seconds=e["second"], milliseconds=e["ms"])
            status = "unmetered" if e["unmetered"] else ("unpriced" if e["cost"] is None else "priced")
            rows.append([uuid.uuid4(), at, backend, deployment, model, e["team"], e["project"], e["user"], e["key"],
                         e["cost"] if status == "priced" else None, status, 0])
        self._write(rows)
        self.batches.append(rows)
        self.rows += rows

    def _write(self, rows: list[list[Any]]) -> None:
        self.client.insert("usage_costs", rows, column_names=[
            "event_id", "started_at", "backend", "deployment", "model", "team", "project", "user", "api_key_id",
            "cost_usd", "pricing_status", "rating_version"])

    def redeliver(self, index: int) -> None:
        if self.batches:
            self._write(self.batches[index % len(self.batches)])

    def reprice(self, changes: list[tuple[int, Decimal | None]]) -> None:
        if not self.rows:
            return
        newer = []
        for index, cost in changes:
            old = self.rows[index % len(self.rows)]
            new = [*old[:9], cost, "priced" if cost is not None else "unpriced", old[11] + 1]
            self.rows[index % len(self.rows)] = new
            newer.append(new)
        self._write(newer)


def sync_budgets(client: Client, budgets: list[Budget]) -> None:
    """The budgets' windows as the pricer writes them, synced a day before the history (so all of it is covered)."""
    client.insert("budget_windows", window_rows(budgets, BASE - timedelta(days=1), timedelta(days=3)),
                  column_names=COLUMNS)


def context(until: datetime, team: str | None) -> QueryContext:
    variables = {v["name"]: Variable(v["name"], ALL) for v in SPEND["templating"]["list"]}
    if team is not None:
        variables["team"] = Variable("team", (team,))
    return QueryContext(until - timedelta(days=7), until, timedelta(hours=3), variables)


def panel(client: Client, ctx: QueryContext, *, rollups: bool) -> list[tuple[Any, ...]]:
    return client.query(expand(budget_use_panel(VARIABLE_FILTERS, rollups=rollups), ctx)).result_rows


def assert_exact(client: Client, ends: list[datetime]) -> None:
    for until in ends:
        for team in (None, "alpha"):
            ctx = context(until, team)
            raw = panel(client, ctx, rollups=False)
            assert raw, "every example has budgets whose window holds the range's end"
            assert panel(client, ctx, rollups=True) == raw, (until, team)


def reset(client: Client) -> None:
    for table in TABLES:
        client.command(f"TRUNCATE TABLE {table}")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(history=st.lists(step, min_size=1, max_size=10), budgets=st.lists(budget, max_size=5),
       end=range_end)
def test_budget_use_with_rollups_equals_final_over_raw_rows(store: Client, history: list[tuple[str, Any]],
                                                           budgets: list[tuple[Any, ...]],
                                                           end: tuple[int, int]) -> None:
    reset(store)
    sync_budgets(store, [*FIXED, *(Budget(f"b{i}", scope, value, amount, period, zone)
                                   for i, (scope, value, period, zone, amount) in enumerate(budgets))])
    costs = Costs(store)
    for kind, arg in history:
        if kind == "insert":
            costs.insert(arg)
        elif kind == "redeliver":
            costs.redeliver(arg)
        elif kind == "reprice":
            costs.reprice(arg)
        else:
            rollup.refresh(store, now=BASE + timedelta(hours=arg[0], minutes=arg[1]))
    hour, ms = end
    ends = [BASE + timedelta(hours=hour, milliseconds=ms), BASE + timedelta(hours=3)]
    assert_exact(store, ends)  # hours dirtied after the last job (or never computed) read raw, the others rollups
    rollup.refresh(store)
    assert_exact(store, ends)  # every whole hour of the history is clean now


def test_clean_hours_come_from_the_rollup_and_a_half_hour_start_from_raw_rows(store: Client) -> None:
    """Not a tautology: after a job, the panel reads a clean hour's rows from usage_rollup (the raw rows, corrupted
    here, are not read), except the hour a Kolkata day starts in (18:30 UTC), whose rows from 18:30 are read raw."""
    reset(store)
    sync_budgets(store, [Budget("month", ScopeKind.TEAM, "alpha", Decimal(100)),
                         Budget("kolkata", ScopeKind.TEAM, "alpha", Decimal(100), Period.DAY, "Asia/Kolkata")])
    at = [BASE + timedelta(hours=2, minutes=10), BASE + timedelta(hours=2, minutes=40),
          BASE + timedelta(hours=4, minutes=5)]  # 18:10, 18:40 and 20:05 UTC
    store.insert("usage_costs", [[uuid.uuid4(), t, "alpha", Decimal(i + 1), "priced", 0] for i, t in enumerate(at)],
                 column_names=["event_id", "started_at", "team", "cost_usd", "pricing_status", "rating_version"])
    rollup.refresh(store)
    store.command("ALTER TABLE usage_costs UPDATE cost_usd = 999 WHERE 1 SETTINGS mutations_sync = 2")
    ctx = context(BASE + timedelta(hours=6), None)
    spent = {row[0]: row[6] for row in panel(store, ctx, rollups=True)}
    assert spent == {"month": Decimal(6), "kolkata": Decimal(999 + 3)}
    assert {row[0]: row[6] for row in panel(store, ctx, rollups=False)} == {"month": Decimal(999 * 3),
                                                                          "kolkata": Decimal(999 * 2)}
