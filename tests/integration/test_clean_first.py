"""The month chargeback's fast path (reports/clean_first.py): over a rolled-up window it plans no raw GPU tail and
gives what FINAL over raw rows gives; where an hour is not rolled up the fast query fails with NOT_ROLLED_UP and
the report falls back to the ordinary query, exact again."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from aimeter.reports import chargeback, clean_first, rollup
from aimeter.reports.sql import NOT_ROLLED_UP, Window, bound_window, chargeback_query, daily_query
from aimeter.store.migrations import migrate
from tests.integration.test_rollup_exact import BASE, ROUTES, TABLES, Ledger

pytestmark = pytest.mark.integration

DATABASE = "clean_first"
MONTH = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
NOW = datetime(2026, 12, 1, 1, tzinfo=UTC)  # the job computes every hour of November


def _event(hour: int, team: str, route: tuple[str, str, str, str], cost: str | None) -> dict[str, Any]:
    return {"hour": hour, "second": 7, "ms": 5, "team": team, "project": "p1", "user": "u1", "key": "k1",
            "route": route, "cost": None if cost is None else Decimal(cost), "reference": Decimal("0.25"),
            "text_cost": None, "input": 1200, "cached": 0, "output": 300, "unmetered": False,
            "attempt": ("ok", 200, False), "duration_ms": 900, "ttft_ms": None, "lag_ms": 1000}


@pytest.fixture
def ledger(chdb_path: Path, chdb_client: Client) -> Iterator[Ledger]:
    """A rolled-up month: paid and self-hosted requests of two teams, a GPU period with idle capacity."""
    chdb_client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=DATABASE)
    migrate(client)
    for table in TABLES:
        client.command(f"TRUNCATE TABLE {table}")
    ledger = Ledger(client)
    ledger.gpu(0, 4, Decimal("3.6"), 9000, False)
    ledger.insert([_event(0, "alpha", ROUTES[0], "1.5"), _event(1, "beta", ROUTES[2], "0.01"),
                   _event(3, "alpha", ROUTES[2], None), _event(2, "beta", ROUTES[1], "0.75")])
    rollup.refresh(client, NOW)
    yield ledger
    client.close()


def _rows(client: Client, query: tuple[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(client.query(*query).result_rows, key=repr)


def _reports(window: Window) -> list[tuple[str, dict[str, Any]]]:
    return [chargeback_query("team", window), chargeback_query("project", window, owner="team"),
            daily_query("team", window)]


def test_a_rolled_up_month_plans_no_gpu_view_and_equals_final(ledger: Ledger) -> None:
    window = bound_window(*MONTH)
    fast = dataclasses.replace(window, clean_only=True)
    assert chargeback_query("team", window)[0].count("gpu_cost_allocation(") == 1  # the (empty) raw tail
    assert chargeback_query("team", fast)[0].count("gpu_cost_allocation(") == 0
    raw = dataclasses.replace(window, rollups=False)
    for quick, exact in zip(_reports(fast), _reports(raw), strict=True):
        assert _rows(ledger.client, quick) == _rows(ledger.client, exact)
    [idle] = [r for r in _rows(ledger.client, chargeback_query("team", fast)) if r[1] == "idle"]
    assert idle[11] > 0  # self_hosted_cost_usd: the GPU hours (idle capacity) come from the rollup


def test_an_hour_not_rolled_up_fails_the_fast_query_and_the_report_falls_back(ledger: Ledger) -> None:
    ledger.insert([_event(2, "alpha", ROUTES[2], "0.02")])  # a late self-hosted event: hour 2 and its GPU share
    window = bound_window(*MONTH)
    with pytest.raises(DatabaseError, match=NOT_ROLLED_UP.split(":")[0]):
        ledger.client.query(*chargeback_query("team", dataclasses.replace(window, clean_only=True)))
    raw = dataclasses.replace(window, rollups=False)
    for build in (lambda w: chargeback_query("team", w), lambda w: daily_query("team", w)):
        got = sorted(clean_first.query(ledger.client, build, window, whole_hours=True).result_rows, key=repr)
        assert got == _rows(ledger.client, build(raw))
    report = chargeback.fetch(ledger.client, "2026-11", "team", now=NOW)
    assert {r["team"]: r["requests"] for r in report.rows} == {"alpha": 3, "beta": 2, "idle": 0}  # the late one in
    expected = {r[1]: r[9] for r in _rows(ledger.client, chargeback_query("team", raw))}  # loaded_cost_usd
    assert {r["team"]: r["loaded_cost_usd"] for r in report.rows} == expected


def test_a_month_never_rolled_up_fails_the_fast_query_and_the_report_falls_back(ledger: Ledger) -> None:
    """No rollup row at all (the job never ran): the guard must fail the query all the same."""
    for table in ("rollup_hours", "usage_rollup", "usage_rollup_teams"):
        ledger.client.command(f"TRUNCATE TABLE {table}")
    window = bound_window(*MONTH)
    with pytest.raises(DatabaseError, match=NOT_ROLLED_UP.split(":")[0]):
        ledger.client.query(*daily_query("team", dataclasses.replace(window, clean_only=True)))
    report = chargeback.fetch(ledger.client, "2026-11", "team", now=NOW)
    expected = {r[1]: r[9] for r in _rows(ledger.client, chargeback_query("team", dataclasses.replace(
        window, rollups=False)))}
    assert {r["team"]: r["loaded_cost_usd"] for r in report.rows} == expected
    assert expected["idle"] > 0


def test_month_to_date_never_tries_the_fast_query(ledger: Ledger) -> None:
    """A window ending inside the current hour always has a raw tail: no clean_only attempt (it would only fail)."""
    since, until = BASE, BASE + timedelta(hours=5, minutes=20)
    window = bound_window(since, until)
    seen: list[str] = []

    def build(w: Window) -> tuple[str, dict[str, Any]]:
        seen.append("fast" if w.clean_only else "ordinary")
        return chargeback_query("team", w)

    clean_first.query(ledger.client, build, window, whole_hours=False)
    assert seen == ["ordinary"]
