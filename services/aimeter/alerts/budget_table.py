"""The ``budget_windows`` table the budget-use panel reads: each configured budget's windows, from the config.

The rows are pure (:func:`window_rows`); :func:`sync_budget_windows` writes them with a writable client. In
embedded mode only the process that owns chDB can write, so the pricer calls it at start, beside the GPU cost
history it also syncs from the config; ``aimeter alerts`` calls it too when its store is a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from aimeter.budgets.model import Budget, budget_window
from aimeter.config import GatewayConfig

AHEAD = timedelta(days=400)  # windows written ahead of each sync, so the panel stays right between restarts
COLUMNS = ["name", "scope", "scope_value", "enforcement", "period", "timezone", "amount_usd", "window_start",
           "window_reset", "synced_at"]


def config_budgets(config: GatewayConfig) -> list[Budget]:
    """The config's ``budgets.caps`` as budgets (none when the config has no ``budgets:`` section)."""
    return [cap.budget() for cap in config.budgets.caps] if config.budgets is not None else []


def window_rows(budgets: Sequence[Budget], now: datetime, ahead: timedelta = AHEAD) -> list[list[Any]]:
    """One row per budget per window, from the window containing ``now`` until ``now + ahead``."""
    rows: list[list[Any]] = []
    for budget in budgets:
        window = budget_window(budget, now)
        while window.start < now + ahead:
            rows.append([budget.name, budget.scope.value, budget.scope_value, budget.enforcement.value,
                         budget.period.value, budget.timezone, budget.amount_usd, window.start, window.reset, now])
            window = budget_window(budget, window.reset)
    return rows


def sync_budget_windows(client: Client, budgets: Sequence[Budget], now: datetime | None = None) -> int:
    """Write the budgets' windows as one sync (``synced_at = now``, default the clock); with no budget the table
    is emptied, so the panel shows none. Returns the rows written."""
    rows = window_rows(budgets, now or datetime.now(UTC))
    if rows:
        client.insert("budget_windows", rows, column_names=COLUMNS)
    else:  # no budget: the newest sync must still hide the old ones (they were removed from the config)
        client.command("TRUNCATE TABLE IF EXISTS budget_windows")
    return len(rows)
