"""The alert state's start from the ledger: period-to-date spend before ``since`` as totals, each team's hours
for the spike rule, and every row from ``since`` on one by one (so Kafka's copies of them are not counted again).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from aimeter.alerts.rules import HOUR, Alert, last_complete_hour
from aimeter.alerts.state import AlertState, Spend
from aimeter.reports.budget_use import recent_rows_query, spent_query, team_hours_query


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def money(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


def load_ledger(client: Client, state: AlertState, now: datetime) -> list[Alert]:
    """Fill ``state`` from the ledger as of ``now``; the threshold alerts the ledger's spend already decides."""
    since = state.since
    for budget in state.budgets:
        window = state.windows[budget.name]
        if window.start < since:
            sql, params = spent_query(budget.scope.value, budget.scope_value, window.start, since)
            state.load_spent(budget.name, money(client.query(sql, parameters=params).result_rows[0][0]))
    first_hour = last_complete_hour(now, state.rules) - HOUR * state.rules.spike_trailing_hours
    sql, params = team_hours_query(first_hour, since)
    for team, hour, amount in client.query(sql, parameters=params).result_rows:
        state.load_hour(team, utc(hour), money(amount))
    alerts: list[Alert] = []
    sql, params = recent_rows_query(since)
    for event_id, started_at, cost, team, project, user, key_id in client.query(sql, parameters=params).result_rows:
        alerts += state.add(Spend(event_id, utc(started_at), None if cost is None else money(cost), team, project,
                                  user, key_id))
    return alerts
