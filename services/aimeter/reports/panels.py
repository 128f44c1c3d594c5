"""The SQL of every dashboard panel, in the ClickHouse datasource plugin's dialect (pure).

Spend figures come from the same builder as ``aimeter chargeback`` (reports/sql.py), filled
in with the plugin's macros instead of bound parameters, so a dashboard and a chargeback report over
the same month cannot disagree. The time filter is ``$__timeFilter_ms``: the plugin's ``$__timeFilter``
truncates to whole seconds and would drop the last second of a month.

Every query filters on the five dashboard variables with ``$__conditionalAll(col IN (${var:singlequote}), $var)``,
which the plugin turns into ``1=1`` when All is selected. ``:singlequote`` quotes each selected value and escapes
its ``'`` (as ``\\'``, which ClickHouse reads), so a model named ``o'brien`` filters instead of breaking the panel;
the plugin's own multi-value formatting quotes without escaping.
"""

from __future__ import annotations

from collections.abc import Sequence

from aimeter.reports.rollup import CACHE_READ_SAVINGS
from aimeter.reports.sql import (
    COSTS_COLUMNS,
    EVENTS_COLUMNS,
    FILTER_DIMENSIONS,
    NO_FILTERS,
    ROLLED_COST,
    Filters,
    Grouping,
    Window,
    aggregate_query,
    chargeback_query,
    chargeback_total_query,
    month_start,
)
from aimeter.reports.terms import NOT_PRICED, ZERO

GRAFANA_WINDOW = Window(lambda col: f"$__timeFilter_ms({col})", "$__fromTime_ms", "$__toTime_ms")
VARIABLE_FILTERS = Filters(
    FILTER_DIMENSIONS, lambda dim, col: f"$__conditionalAll({col} IN (${{{dim}:singlequote}}), ${dim})")


def _where(time_col: str, columns: dict[str, str], *extra: str) -> str:
    conditions = [GRAFANA_WINDOW.where(time_col), *VARIABLE_FILTERS.where(columns), *extra]
    return "\n  AND ".join(conditions)


def costs_where(*extra: str) -> str:
    """Rows of ``usage_costs FINAL`` in the panel's range that pass the variables."""
    return _where("started_at", COSTS_COLUMNS, *extra)


def events_where(*extra: str, time_col: str = "started_at") -> str:
    return _where(time_col, EVENTS_COLUMNS, *extra)


def spend(measures: Sequence[str], grouping: Grouping | None = None) -> str:
    return aggregate_query(measures, GRAFANA_WINDOW, VARIABLE_FILTERS, grouping or Grouping())[0]


def spend_over_time(key: str, window: Window = GRAFANA_WINDOW) -> str:
    """Fully loaded spend per ``$__timeInterval`` bucket and ``key`` (long format: the plugin makes series).
    Hourly rollups serve only buckets of whole hours (an interval that is a multiple of 3600 s); a finer
    interval (a range of a day or less) reads raw rows."""
    return aggregate_query(["loaded_cost_usd"], window, VARIABLE_FILTERS, Grouping(
        key=key, key_name=key, bucket=lambda col: f"$__timeInterval({col})", bucket_name="time",
        order=f"time, {key}", rollup_ok="$__interval_s % 3600 = 0"))[0]


def deployment_split() -> str:
    return spend(["loaded_cost_usd"], Grouping(key="deployment", key_name="deployment", order="deployment"))


def savings_by_backend() -> str:
    return spend(["reference_cost_usd", "self_hosted_cost_usd", "savings_usd"], Grouping(
        key="backend", key_name="backend", having="reference_cost_usd != 0 OR self_hosted_cost_usd != 0",
        order="savings_usd DESC, backend"))


def chargeback_table() -> str:
    """Month x team (or team x project, the ``group_by`` variable): the finance table. A project line is also
    grouped by team (``owner_team``), so one team cannot put its spend on another team's project line. The
    current month's lines say "month to date": the allocation never bills past now."""
    table = chargeback_query("${group_by:raw}", GRAFANA_WINDOW, VARIABLE_FILTERS, key_name="${group_by:raw}",
                             owner="team", owner_name="owner_team")[0]
    return f"""SELECT
    if(addMonths(month, 1) > now64(3), 'month to date', 'whole month') AS period,
    *
FROM (
{table}
)"""  # noqa: S608 - fixed text and plugin macros


def chargeback_total() -> str:
    return chargeback_total_query(GRAFANA_WINDOW, VARIABLE_FILTERS, (
        "requests", "cost_usd", "loaded_cost_usd", "self_hosted_cost_usd", "savings_usd", "unpriced_requests"))[0]


def _costs(columns: dict[str, tuple[str, str]], window: Window, filters: Filters, *extra: str) -> str:
    """usage_costs FINAL rows in the panel's range passing the variables and ``extra`` and, with rollups, the
    usage_rollup rows of the range's clean whole hours (the raw part then skips them), each as ``columns``
    (name -> (raw expression, rollup expression)); names are ``p_``-prefixed so no alias shadows a column."""
    span = window.span()
    conditions = [*filters.where(COSTS_COLUMNS), *extra]

    def select(index: int, source: str, where: Sequence[str]) -> str:
        cells = ", ".join(f"{exprs[index]} AS {name}" for name, exprs in columns.items())
        return f"SELECT {cells} FROM {source} WHERE {' AND '.join(where)}"  # noqa: S608 - fixed text

    if not window.rollups:
        return select(0, "usage_costs FINAL", [window.where("started_at"), *conditions])
    raw = select(0, "usage_costs FINAL", [window.where("started_at"), span.raw("started_at"), *conditions])
    rolled = select(1, "usage_rollup", [span.rolled(), "source = 'cost'", *conditions])
    return f"{raw}\n    UNION ALL\n    {rolled}"


def idle_capacity(window: Window = GRAFANA_WINDOW, filters: Filters = VARIABLE_FILTERS) -> str:
    """Idle GPU capacity per month and backend (team ``idle`` of the allocation), beside the backend's full cost.
    Only the backend and deployment variables apply: idle hours belong to no team, project or model."""
    gpu_filters = Filters(tuple(d for d in ("backend", "deployment") if d in filters.dimensions), filters.condition)
    conditions = gpu_filters.where(COSTS_COLUMNS)
    span = window.span()

    def select(source: str, cost: str, where: Sequence[str]) -> str:
        return (f"SELECT {month_start('hour')} AS p_month, backend AS p_backend, "  # noqa: S608
                f"if(team = 'idle', {cost}, {ZERO}) AS p_idle, {cost} AS p_cost FROM {source} "
                f"WHERE {' AND '.join(where) or '1 = 1'}")

    parts = [select(window.allocation, "cost_usd", conditions)] if not window.rollups else [
        select(span.raw_allocation(window.partial_head), "cost_usd", [span.raw("hour"), *conditions]),
        select("usage_rollup", "gpu_usd", [span.rolled(), "source = 'gpu'", *conditions])]
    rows = "\n    UNION ALL\n    ".join(parts)
    return f"""SELECT
    p_month AS month,
    p_backend AS backend,
    sum(p_idle) AS idle_cost_usd,
    sum(p_cost) AS gpu_cost_usd
FROM (
    {rows}
)
GROUP BY month, backend
ORDER BY month, backend"""  # noqa: S608 - fixed text and plugin macros


def usd_per_million_by_model(window: Window = GRAFANA_WINDOW, filters: Filters = VARIABLE_FILTERS) -> str:
    """Marginal $ per 1M tokens (input + output) of priced requests; unpriced ones would drag it towards 0.
    Only the model and the plotted figure are returned: a bar chart draws every numeric column as bars."""
    rows = _costs({"model": ("model", "model"), "p_cost": ("cost_usd", ROLLED_COST),
                   "p_tokens": ("input_tokens + output_tokens", "input_tokens + output_tokens")},
                  window, filters, "pricing_status = 'priced'")
    return f"""SELECT
    model,
    sum(p_cost) * 1000000 / sum(p_tokens) AS usd_per_1m_tokens
FROM (
    {rows}
)
GROUP BY model
HAVING sum(p_tokens) > 0
ORDER BY usd_per_1m_tokens DESC, model"""  # noqa: S608


def top_by(column: str, label: str, window: Window = GRAFANA_WINDOW, filters: Filters = VARIABLE_FILTERS) -> str:
    """The ten ``column`` values (virtual keys, users) with the highest marginal spend."""
    rows = _costs({"p_label": (column, column), "p_team": ("team", "team"), "p_requests": ("toUInt64(1)", "requests"),
                   "p_cost": ("cost_usd", ROLLED_COST),
                   "p_unpriced": (f"toUInt64(pricing_status IN {NOT_PRICED})", "unpriced_requests")},
                  window, filters, f"{column} != ''")
    return f"""SELECT
    p_label AS {label},
    p_team AS team,
    sum(p_requests) AS requests,
    sum(p_cost) AS spend_usd,
    sum(p_unpriced) AS unpriced_requests
FROM (
    {rows}
)
GROUP BY {label}, team
ORDER BY ifNull(spend_usd, {ZERO}) DESC, requests DESC, {label}
LIMIT 10"""  # noqa: S608


def cache_read_savings(window: Window = GRAFANA_WINDOW, filters: Filters = VARIABLE_FILTERS) -> str:
    """What cache reads saved on paid APIs: the tokens at the request's own uncached input rate, minus what
    they cost. A request with no uncached input tells no rate and is left out (the figure is a floor)."""
    rows = _costs({"p_saved": (CACHE_READ_SAVINGS, "cache_read_savings_usd")}, window, filters,
                  "deployment = 'proprietary'", "pricing_status = 'priced'")
    return f"""SELECT
    sum(p_saved) AS cache_read_savings_usd
FROM (
    {rows}
)"""  # noqa: S608


def unpriced_count(window: Window = GRAFANA_WINDOW, filters: Filters = VARIABLE_FILTERS) -> str:
    rows = _costs({"p_unpriced": ("toUInt64(1)", "unpriced_requests")}, window, filters,
                  f"pricing_status IN {NOT_PRICED}")
    return f"""SELECT sum(p_unpriced) AS unpriced_requests
FROM (
    {rows}
)"""  # noqa: S608


def unpriced_by_model(window: Window = GRAFANA_WINDOW, filters: Filters = VARIABLE_FILTERS) -> str:
    rows = _costs({"p_model": ("model", "model"), "p_backend": ("backend", "backend"),
                   "p_unpriced": ("toUInt64(1)", "unpriced_requests")}, window, filters,
                  f"pricing_status IN {NOT_PRICED}")
    return f"""SELECT p_model AS model, p_backend AS backend, sum(p_unpriced) AS unpriced_requests
FROM (
    {rows}
)
GROUP BY model, backend
ORDER BY unpriced_requests DESC, model, backend"""  # noqa: S608


def cost_panels(window: Window, filters: Filters = NO_FILTERS) -> list[str]:
    """Every spend panel that does not go through :func:`aggregate_query`, over any window (the rollup tests
    compare them with rollups on and off)."""
    return [idle_capacity(window, filters), usd_per_million_by_model(window, filters),
            top_by("api_key_id", "api_key_id", window, filters), top_by("user", "user", window, filters),
            cache_read_savings(window, filters), unpriced_count(window, filters), unpriced_by_model(window, filters)]


def variable_values(dimension: str) -> str:
    """Choices of a dashboard variable: values seen in the range, plus the GPU allocation's (``idle``)."""
    return f"""SELECT {dimension} FROM (
    SELECT DISTINCT {dimension} FROM usage_costs WHERE $__timeFilter_ms(started_at)
    UNION DISTINCT
    SELECT DISTINCT {dimension} FROM {GRAFANA_WINDOW.allocation}
)
ORDER BY {dimension}"""  # noqa: S608
