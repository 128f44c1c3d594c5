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

from aimeter.reports.sql import (
    COSTS_COLUMNS,
    EVENTS_COLUMNS,
    FILTER_DIMENSIONS,
    NOT_PRICED,
    ZERO,
    Filters,
    Grouping,
    Window,
    aggregate_query,
    chargeback_query,
    chargeback_total_query,
    month_start,
)

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


def spend_over_time(key: str) -> str:
    """Fully loaded spend per ``$__timeInterval`` bucket and ``key`` (long format: the plugin makes series)."""
    return spend(["loaded_cost_usd"], Grouping(key=key, key_name=key, bucket=lambda col: f"$__timeInterval({col})",
                                               bucket_name="time", order=f"time, {key}"))


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


def idle_capacity() -> str:
    """Idle GPU capacity per month and backend (team ``idle`` of the allocation), beside the backend's full cost.
    Only the backend and deployment variables apply: idle hours belong to no team, project or model."""
    gpu_filters = Filters(("backend", "deployment"), VARIABLE_FILTERS.condition)
    where = "\n  AND ".join(gpu_filters.where(COSTS_COLUMNS))
    return f"""SELECT
    {month_start("hour")} AS month,
    backend,
    sumIf(cost_usd, team = 'idle') AS idle_cost_usd,
    sum(cost_usd) AS gpu_cost_usd
FROM {GRAFANA_WINDOW.allocation}
WHERE {where}
GROUP BY month, backend
ORDER BY month, backend"""  # noqa: S608 - fixed text and plugin macros


def usd_per_million_by_model() -> str:
    """Marginal $ per 1M tokens (input + output) of priced requests; unpriced ones would drag it towards 0.
    Only the model and the plotted figure are returned: a bar chart draws every numeric column as bars."""
    return f"""SELECT
    model,
    sum(cost_usd) * 1000000 / sum(input_tokens + output_tokens) AS usd_per_1m_tokens
FROM usage_costs FINAL
WHERE {costs_where("pricing_status = 'priced'")}
GROUP BY model
HAVING sum(input_tokens + output_tokens) > 0
ORDER BY usd_per_1m_tokens DESC, model"""  # noqa: S608


def top_by(column: str, label: str) -> str:
    """The ten ``column`` values (virtual keys, users) with the highest marginal spend."""
    return f"""SELECT
    {column} AS {label},
    team,
    count() AS requests,
    sum(cost_usd) AS spend_usd,
    countIf(pricing_status IN {NOT_PRICED}) AS unpriced_requests
FROM usage_costs FINAL
WHERE {costs_where(f"{column} != ''")}
GROUP BY {label}, team
ORDER BY ifNull(spend_usd, {ZERO}) DESC, requests DESC, {label}
LIMIT 10"""  # noqa: S608


def cache_read_savings() -> str:
    """What cache reads saved on paid APIs: the tokens at the request's own uncached input rate, minus what
    they cost. A request with no uncached input tells no rate and is left out (the figure is a floor)."""
    return f"""SELECT
    sum(if(text_tokens > 0, ifNull(input_text_cost_usd, {ZERO}) * cache_read_input_tokens / text_tokens
                            - ifNull(cache_read_cost_usd, {ZERO}), {ZERO})) AS cache_read_savings_usd
FROM (
    SELECT input_text_cost_usd, cache_read_cost_usd, cache_read_input_tokens,
           greatest(toInt64(input_tokens) - cache_read_input_tokens - cache_creation_input_tokens
                    - input_audio_tokens - input_image_tokens, 0) AS text_tokens
    FROM usage_costs FINAL
    WHERE {costs_where("deployment = 'proprietary'", "pricing_status = 'priced'", "cache_read_input_tokens > 0")}
)"""  # noqa: S608


def unpriced_count() -> str:
    return f"""SELECT count() AS unpriced_requests
FROM usage_costs FINAL
WHERE {costs_where(f"pricing_status IN {NOT_PRICED}")}"""  # noqa: S608


def unpriced_by_model() -> str:
    return f"""SELECT model, backend, count() AS unpriced_requests
FROM usage_costs FINAL
WHERE {costs_where(f"pricing_status IN {NOT_PRICED}")}
GROUP BY model, backend
ORDER BY unpriced_requests DESC, model, backend"""  # noqa: S608


def variable_values(dimension: str) -> str:
    """Choices of a dashboard variable: values seen in the range, plus the GPU allocation's (``idle``)."""
    return f"""SELECT {dimension} FROM (
    SELECT DISTINCT {dimension} FROM usage_costs WHERE $__timeFilter_ms(started_at)
    UNION DISTINCT
    SELECT DISTINCT {dimension} FROM {GRAFANA_WINDOW.allocation}
)
ORDER BY {dimension}"""  # noqa: S608
