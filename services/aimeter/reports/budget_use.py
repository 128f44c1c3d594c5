"""SQL of budget use: what the alerts consumer reads from the ledger at start, and the dashboards' budget-use
panel (pure).

Spend is the priced ledger's ``cost_usd`` (``usage_costs FINAL``: the newest rating of each event), the same
per-request cost a budget counts: list price after overrides, marginal GPU cost for self-hosted, batch
discounts. Unpriced and unmetered requests add nothing to a budget (no cost is known); the panel counts them.

A budget's scope is one attribution column: ``key`` is the gateway key id (``api_key_id``), the others are the
column of the same name. Budgets live in the config and on gateway keys (``aimeter budgets set``, in the keys
topic); the panel reads their windows from ``budget_windows`` (schemas/clickhouse/0015_budget_windows.sql), which
the pricer writes from both and re-syncs when the set of budgets changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aimeter.reports.sql import COSTS_COLUMNS, Filters
from aimeter.reports.terms import NOT_PRICED, ZERO

SCOPE_COLUMNS = {"key": "api_key_id", "team": "team", "project": "project", "user": "user"}
TIME = "DateTime64(3, 'UTC')"
COST = f"ifNull(cost_usd, {ZERO})"


def spent_query(scope: str, value: str, since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """One scope's priced spend over ``[since, until)``."""
    column = SCOPE_COLUMNS[scope]  # a KeyError for an unknown scope: never spliced from input
    sql = (f"SELECT sum({COST}) FROM usage_costs FINAL WHERE started_at >= {{since:{TIME}}} "  # noqa: S608
           f"AND started_at < {{until:{TIME}}} AND {column} = {{value:String}}")
    return sql, {"since": since, "until": until, "value": value}


def team_hours_query(since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """Each team's priced spend per UTC hour over ``[since, until)`` (the spike rule's history)."""
    sql = (f"SELECT team, toStartOfHour(started_at) AS hour, sum({COST}) FROM usage_costs FINAL "  # noqa: S608
           f"WHERE started_at >= {{since:{TIME}}} AND started_at < {{until:{TIME}}} GROUP BY team, hour")
    return sql, {"since": since, "until": until}


def recent_rows_query(since: datetime) -> tuple[str, dict[str, Any]]:
    """Every priced row that started at or after ``since``, one per event, for counting by event id."""
    sql = (f"SELECT event_id, started_at, cost_usd, team, project, user, api_key_id "  # noqa: S608
           f"FROM usage_costs FINAL WHERE started_at >= {{since:{TIME}}}")
    return sql, {"since": since}


def budget_use_panel(filters: Filters) -> str:
    """Spent against budget for every budget of the latest config sync, in the budget's window that contains the
    end of the dashboard's range (its current period when the range ends now), up to that end. The spend is
    narrowed by the dashboard's filters (all of it with every filter on All, which is what the budget counts)."""
    usage_where = "\n      AND ".join(["started_at >= (SELECT min(window_start) FROM current_windows)",
                                       "started_at <= $__toTime_ms", *filters.where(COSTS_COLUMNS)])
    scopes = ", ".join(f"('{scope}', {column})" for scope, column in SCOPE_COLUMNS.items())
    return f"""WITH current_windows AS (
    SELECT name, scope, scope_value, enforcement, period, timezone, amount_usd, window_start, window_reset
    FROM budget_windows FINAL
    WHERE synced_at = (SELECT max(synced_at) FROM budget_windows)
      AND window_start <= $__toTime_ms AND $__toTime_ms < window_reset
)
SELECT
    b.name AS budget,
    b.scope AS scope,
    b.scope_value AS scope_value,
    b.enforcement AS enforcement,
    b.period AS period,
    b.amount_usd AS budget_usd,
    sumIf(ifNull(u.cost_usd, {ZERO}), u.started_at >= b.window_start) AS spent_usd,
    if(b.amount_usd > 0, round(toFloat64(spent_usd) * 100 / toFloat64(b.amount_usd), 1), NULL) AS used_pct,
    b.amount_usd - spent_usd AS remaining_usd,
    countIf(u.started_at >= b.window_start AND u.pricing_status IN {NOT_PRICED}) AS unpriced_requests,
    b.window_reset AS resets_at
FROM current_windows AS b
LEFT JOIN (
    SELECT s.1 AS scope, s.2 AS scope_value, started_at, cost_usd, pricing_status
    FROM usage_costs FINAL
    ARRAY JOIN [{scopes}] AS s
    WHERE {usage_where}
) AS u ON u.scope = b.scope AND u.scope_value = b.scope_value
GROUP BY budget, scope, scope_value, enforcement, period, budget_usd, resets_at, b.window_start
ORDER BY used_pct DESC, budget"""  # noqa: S608 - fixed text and plugin macros
