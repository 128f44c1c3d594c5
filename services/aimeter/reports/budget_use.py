"""SQL of budget use: what the alerts consumer reads from the ledger at start, and the dashboards' budget-use
panel (pure).

Spend is the priced ledger's ``cost_usd`` (``usage_costs FINAL``: the newest rating of each event), the same
per-request cost a budget counts: list price after overrides, marginal GPU cost for self-hosted, batch
discounts. Unpriced and unmetered requests add nothing to a budget (no cost is known); the panel counts them.

A budget's scope is one attribution column: ``key`` is the gateway key id (``api_key_id``), the others are the
column of the same name. Budgets live in the config and on gateway keys (``aimeter budgets set``, in the keys
topic); the panel reads their windows from ``budget_windows`` (schemas/clickhouse/0015_budget_windows.sql), which
the pricer writes from both and re-syncs when the set of budgets changes.

The panel reads the exact hourly rollups (reports/rollup.py): each budget's spend and unpriced count are
``usage_rollup``'s 'cost' rows for the clean hours wholly inside the budget's window ``[window_start, end of the
range]``, plus raw ``usage_costs FINAL`` rows for the rest: hours not clean, the hour the range ends in, and the
hour a window starts in when it starts inside one (Asia/Kolkata's midnight is 18:30 UTC, Asia/Kathmandu's
18:15). Budgets have windows of their own, so one hour can be whole for one budget and partial for another: the
raw rows of such an hour are read once and count only for the budgets whose window starts inside it. The answer
equals the raw query (``rollups=False``) row for row (tests/integration/test_budget_use_rollup.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aimeter.reports.rollup import Span
from aimeter.reports.sql import COSTS_COLUMNS, Filters
from aimeter.reports.terms import NOT_PRICED, ZERO

SCOPE_COLUMNS = {"key": "api_key_id", "team": "team", "project": "project", "user": "user"}
# A row's (scope, value) pairs, one per budget scope: what the panel ARRAY JOINs to match rows to budgets.
SCOPE_PAIRS = "[" + ", ".join(f"('{scope}', {column})" for scope, column in SCOPE_COLUMNS.items()) + "]"
TIME = "DateTime64(3, 'UTC')"
COST = f"ifNull(cost_usd, {ZERO})"
# The earliest window start of the panel's budgets (the range's end when there is none: nothing is read).
# (ifNull outside: a scalar subquery's value is Nullable, and numbers() in rollup.Span takes no Nullable).
EARLIEST = "ifNull((SELECT minOrNull(window_start) FROM current_windows), $__toTime_ms)"


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


def _in_budgets() -> str:
    """Rows attributed to some budget's scope value (most rows are not: the join then sees only these)."""
    sets = (f"{column} IN (SELECT scope_value FROM current_windows WHERE scope = '{scope}')"  # noqa: S608
            for scope, column in SCOPE_COLUMNS.items())
    return f"({' OR '.join(sets)})"


def _budget_rows(rows: str) -> str:
    """``rows`` (p_-prefixed, with team, project, user and api_key_id) once per scope of a budget they count for."""
    return f"""SELECT s.1 AS scope, s.2 AS scope_value, p_at, p_part, p_cost, p_unpriced
    FROM (
        {rows}
    )
    ARRAY JOIN {SCOPE_PAIRS} AS s
    WHERE (scope, scope_value) IN (SELECT scope, scope_value FROM current_windows)"""  # noqa: S608


def _usage(filters: Filters) -> str:
    """Each budget's usage rows, from the hourly rollups where they can serve it: p_part 2 is a usage_rollup row
    of a clean hour; p_part 1 a raw row of such an hour (it counts only for a budget whose window starts inside
    that hour, a partial first hour); p_part 0 a raw row of any other hour (not clean, or after the last whole
    hour of the range)."""
    span = Span(EARLIEST, "$__toTime_ms")
    # A window that starts inside an hour (a half-hour timezone, Asia/Kolkata) needs that hour's raw rows even when
    # it is clean; toDate(started_at) is usage_costs' first key column, so it narrows the read to those days.
    starts_inside = "FROM current_windows WHERE window_start != toStartOfHour(window_start)"
    heads = (f"toDate(started_at) IN (SELECT toDate(window_start) {starts_inside}) "
             f"AND toStartOfHour(started_at) IN (SELECT toStartOfHour(window_start) {starts_inside})")
    costs = filters.where(COSTS_COLUMNS)
    raw_where = "\n          AND ".join([f"started_at >= {EARLIEST}", "started_at <= $__toTime_ms",
                                        f"({span.raw('started_at')}\n               OR {heads})",
                                        _in_budgets(), *costs])
    rolled_where = "\n          AND ".join([span.rolled(), "source = 'cost'", _in_budgets(), *costs])
    return _budget_rows(f"""SELECT started_at AS p_at, toUInt8(toStartOfHour(started_at) IN {span.clean_hours})
            AS p_part, cost_usd AS p_cost, toUInt64(pricing_status IN {NOT_PRICED}) AS p_unpriced,
            team, project, user, api_key_id
        FROM usage_costs FINAL
        WHERE {raw_where}
        UNION ALL
        SELECT hour, toUInt8(2), cost_usd, unpriced_requests, team, project, user, api_key_id
        FROM usage_rollup
        WHERE {rolled_where}""")  # noqa: S608 - fixed text and plugin macros


def budget_use_panel(filters: Filters, *, rollups: bool = True) -> str:
    """Spent against budget for every budget of the latest config sync, in the budget's window that contains the
    end of the dashboard's range (its current period when the range ends now), up to that end. The spend is
    narrowed by the dashboard's filters (all of it with every filter on All, which is what the budget counts).
    ``rollups`` off reads every row raw with FINAL (what the rollups are compared against)."""
    if rollups:
        usage = _usage(filters)
        first_whole = "toStartOfHour(b.window_start - toIntervalMillisecond(1)) + toIntervalHour(1)"
        counted = (f"multiIf(u.p_part = 2, u.p_at >= {first_whole},\n"
                   f"            u.p_part = 1, u.p_at >= b.window_start AND u.p_at < {first_whole},\n"
                   f"            u.p_at >= b.window_start)")
        spent, unpriced = f"sumIf(ifNull(u.p_cost, {ZERO}), {counted})", f"sumIf(u.p_unpriced, {counted})"
    else:
        usage_where = "\n      AND ".join(["started_at >= (SELECT min(window_start) FROM current_windows)",
                                           "started_at <= $__toTime_ms", *filters.where(COSTS_COLUMNS)])
        usage = f"""SELECT s.1 AS scope, s.2 AS scope_value, started_at, cost_usd, pricing_status
    FROM usage_costs FINAL
    ARRAY JOIN {SCOPE_PAIRS} AS s
    WHERE {usage_where}"""  # noqa: S608
        spent = f"sumIf(ifNull(u.cost_usd, {ZERO}), u.started_at >= b.window_start)"
        unpriced = f"countIf(u.started_at >= b.window_start AND u.pricing_status IN {NOT_PRICED})"
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
    {spent} AS spent_usd,
    if(b.amount_usd > 0, round(toFloat64(spent_usd) * 100 / toFloat64(b.amount_usd), 1), NULL) AS used_pct,
    b.amount_usd - spent_usd AS remaining_usd,
    {unpriced} AS unpriced_requests,
    b.window_reset AS resets_at
FROM current_windows AS b
LEFT JOIN (
    {usage}
) AS u ON u.scope = b.scope AND u.scope_value = b.scope_value
GROUP BY budget, scope, scope_value, enforcement, period, budget_usd, resets_at, b.window_start
ORDER BY used_pct DESC, budget"""  # noqa: S608 - fixed text and plugin macros
