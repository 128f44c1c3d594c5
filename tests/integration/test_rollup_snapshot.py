"""A report reads the set of clean hours once per query, so an hour the rollup job finishes, or an insert dirties,
while the query runs is read from the rollup or from raw rows, never both and never neither.

The set changes under running queries in production: the job makes the hour that just ended clean every
``AIMETER_ROLLUP_INTERVAL_S``, and a late event or a re-rating makes an old hour dirty at any moment. Such a race
is milliseconds wide and cannot be timed in a test, so the test makes every read of the set race: it puts a
``rollup_clean_hours`` in front of the real one that drops each clean hour at random on every read. Dropping a
clean hour is always safe (its rows are then read raw); reading the set twice in one query is what breaks, and
is what these reports must not do. Before the set was one array (``Span.snapshot``), the rolled part and the
raw part read it apart, and these comparisons failed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from aimeter.reports import rollup
from aimeter.store.migrations import migrate
from tests.integration.test_rollup_exact import BASE, HOURS, ROUTES, TABLES, Ledger, assert_exact

pytestmark = pytest.mark.integration

DATABASE = "rollup_snapshot"


def _event(hour: int, second: int, team: str, route: tuple[str, str, str, str], cost: str | None) -> dict[str, Any]:
    return {"hour": hour, "second": second, "ms": 5, "team": team, "project": "p1", "user": f"u-{team}",
            "key": "k1", "route": route, "cost": None if cost is None else Decimal(cost),
            "reference": Decimal("0.25"), "text_cost": None, "input": 1200, "cached": 0, "output": 300,
            "unmetered": False, "attempt": ("ok", 200, False), "duration_ms": 900, "ttft_ms": None,
            "lag_ms": 1000}


@pytest.fixture
def flickering(chdb_path: Path, chdb_client: Client) -> Iterator[Client]:
    """A rolled-up ledger whose clean set, read twice, differs (each clean hour dropped at random per read)."""
    chdb_client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database=DATABASE)
    if int(client.command("SELECT count() FROM system.tables WHERE database = currentDatabase() "
                          "AND name = 'rollup_clean_hours_stable'")):  # an earlier run stopped half-way
        client.command("DROP VIEW rollup_clean_hours")
        client.command("RENAME TABLE rollup_clean_hours_stable TO rollup_clean_hours")
    migrate(client)
    for table in TABLES:
        client.command(f"TRUNCATE TABLE {table}")
    ledger = Ledger(client)
    ledger.gpu(0, None, Decimal("3.6"), 9000, False)
    ledger.insert([_event(h, s, team, ROUTES[(h + s) % len(ROUTES)], None if (h, s) == (2, 9) else f"0.{h}{s}")
                   for h in range(HOURS) for s in (7, 9, 40) for team in ("alpha", "beta")])
    rollup.refresh(client, BASE + timedelta(hours=HOURS + 1))
    client.command("RENAME TABLE rollup_clean_hours TO rollup_clean_hours_stable")
    client.command("CREATE VIEW rollup_clean_hours AS SELECT hour, version FROM rollup_clean_hours_stable "
                   "WHERE rand() % 2 = 0")
    yield client
    client.command("DROP VIEW rollup_clean_hours")
    client.command("RENAME TABLE rollup_clean_hours_stable TO rollup_clean_hours")
    client.close()


def test_every_report_equals_final_while_the_clean_set_changes_between_reads(flickering: Client) -> None:
    hours = int(flickering.command(f"SELECT count() FROM rollup_clean_hours_stable WHERE hour >= '{BASE:%F %T}'"))
    assert hours >= HOURS  # the job rolled up every hour of the ledger: the reports have clean hours to read
    for _ in range(3):  # each run draws other subsets
        assert_exact(flickering, every=True)
