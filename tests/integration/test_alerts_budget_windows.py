"""The budget_windows table (migration 0015) as the budget-use panel reads it: only the latest sync counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from aimeter.alerts.budget_table import sync_budget_windows
from aimeter.budgets.model import Budget, ScopeKind

pytestmark = pytest.mark.integration
LATEST = ("SELECT DISTINCT name, amount_usd FROM budget_windows FINAL "
          "WHERE synced_at = (SELECT max(synced_at) FROM budget_windows) ORDER BY name")


def test_a_budget_removed_or_changed_in_the_config_leaves_the_panel(metering_store: Client):
    at = datetime(2026, 6, 1, tzinfo=UTC)
    a, b = Budget("a", ScopeKind.TEAM, "x", Decimal(1)), Budget("b", ScopeKind.USER, "y", Decimal(2))
    try:
        assert sync_budget_windows(metering_store, [a, b], at) == 28
        sync_budget_windows(metering_store, [Budget("a", ScopeKind.TEAM, "x", Decimal(3))], at + timedelta(hours=1))
        assert metering_store.query(LATEST).result_rows == [("a", Decimal(3))]
        sync_budget_windows(metering_store, [], at + timedelta(hours=2))
        assert metering_store.query("SELECT count() FROM budget_windows").result_rows == [(0,)]
    finally:
        sync_budget_windows(metering_store, [])  # the panel test reads this table too: leave it empty
