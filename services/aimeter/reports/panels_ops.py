"""SQL of the Gateway operations panels: what the gateways did, from the usage ledger (pure).

Every upstream attempt is one row of ``usage_events`` (errors and cancelled streams included), read
with ``FINAL`` so a redelivered event is counted once. Durations come from the gateway's own
timestamps; the pipeline lag is ``ingested_at`` (set by ClickHouse when the pricer's insert landed)
minus ``ended_at`` (when the gateway finished the request).

With rollups (the default) the clean whole hours of the range come from ``ops_rollup`` (hourly, recomputed
from ``usage_events FINAL`` by the rollup job, see reports/rollup.py) and only the rest from raw rows, as the
spend panels do. Attempts, statuses and token sums are exact. Latency, time to first token and lag quantiles
are ``quantilesBFloat16``: values rounded to 8 significant bits, so a quantile is within 1/128 (0.8%) of the
value an exact quantile picks; their hourly states merge by adding counts, so a panel gives the same quantiles
with and without rollups. Buckets are by the request's start (the lag's too: it is rolled up by start hour).
"""

from __future__ import annotations

from collections.abc import Sequence

from aimeter.reports.panels import GRAFANA_WINDOW, VARIABLE_FILTERS
from aimeter.reports.rollup import LAG_S, LATENCY_MS, QUANTILES, TTFT_MS
from aimeter.reports.sql import COSTS_COLUMNS, EVENTS_COLUMNS, FILTER_DIMENSIONS, Window

BUCKET = "$__timeInterval"
HOURLY = "$__interval_s % 3600 = 0"  # hourly rows serve only buckets of whole hours
# 1=1 when every dashboard variable is All (the plugin's $__conditionalAll), else 0.
EVERY_VARIABLE_ALL = " AND ".join(f"$__conditionalAll(0, ${d})" for d in FILTER_DIMENSIONS)
MERGE = QUANTILES.replace("(", "Merge(", 1)
STATE = QUANTILES.replace("(", "State(", 1)


def _events(cells: dict[str, tuple[str, str]], keys: Sequence[str], window: Window, *, bucket: bool = True,
            raw_where: Sequence[str] = (), rolled_where: Sequence[str] = ()) -> str:
    """Per (time bucket, ``keys``): each cell as (aggregate over raw rows, expression over a rollup row) named
    ``p_<cell>``; the caller aggregates the union again (sum of counts, merge of states)."""
    time = [f"{BUCKET}(started_at) AS time"] if bucket else []
    group = ", ".join((["time"] if bucket else []) + list(keys)) or "tuple()"
    raw_cells = ", ".join([*time, *keys, *(f"{raw} AS p_{name}" for name, (raw, _) in cells.items())])
    where = [window.where("started_at"), *VARIABLE_FILTERS.where(EVENTS_COLUMNS), *raw_where]
    if not window.rollups:
        return f"SELECT {raw_cells}\n    FROM usage_events FINAL\n    WHERE {' AND '.join(where)}\n    GROUP BY {group}"  # noqa: S608
    span = window.span(HOURLY if bucket else "1")
    raw_filter = " AND ".join([*where, span.raw("started_at")])
    raw = f"SELECT {raw_cells}\n    FROM usage_events FINAL\n    WHERE {raw_filter}\n    GROUP BY {group}"  # noqa: S608
    rolled_cells = ", ".join([*([f"{BUCKET}(hour) AS time"] if bucket else []), *keys,
                              *(f"{rolled} AS p_{name}" for name, (_, rolled) in cells.items())])
    # Every variable at All: the few rows per hour of ops_rollup_all; else ops_rollup's, filtered. Either part's
    # condition is a constant once the plugin has expanded it, so ClickHouse reads only one of the two tables.
    every = [span.rolled(), f"({EVERY_VARIABLE_ALL})", *rolled_where]
    some = [span.rolled(), f"NOT ({EVERY_VARIABLE_ALL})", *VARIABLE_FILTERS.where(COSTS_COLUMNS), *rolled_where]
    rolled = [f"SELECT {rolled_cells}\n    FROM {table}\n    WHERE {' AND '.join(where)}"  # noqa: S608
              for table, where in (("ops_rollup_all", every), ("ops_rollup", some))]
    return "\n    UNION ALL\n    ".join([raw, *rolled])


ATTEMPTS = {"attempts": ("count()", "attempts")}


def requests_per_second(window: Window = GRAFANA_WINDOW) -> str:
    return f"""SELECT time, sum(p_attempts) / $__interval_s AS requests_per_s
FROM (
    {_events(ATTEMPTS, (), window)}
)
GROUP BY time
ORDER BY time"""  # noqa: S608 - fixed text and plugin macros


def error_rate_by_status(window: Window = GRAFANA_WINDOW) -> str:
    """Share of each bucket's attempts that ended in each non-ok status (upstream_error, timeout, …)."""
    return f"""SELECT time, status, attempts / total AS error_rate
FROM (
    SELECT time, status, sum(p_attempts) AS attempts, sum(sum(p_attempts)) OVER (PARTITION BY time) AS total
    FROM (
    {_events(ATTEMPTS, ("status",), window)}
    )
    GROUP BY time, status
)
WHERE status != 'ok'
ORDER BY time, status"""  # noqa: S608


def _quantile_columns(merged: str, unit: str, levels: Sequence[float] = (0.5, 0.95, 0.99)) -> str:
    return ",\n    ".join(f"{merged}[{i + 1}] AS p{int(q * 100)}_{unit}" for i, q in enumerate(levels))


def latency(window: Window = GRAFANA_WINDOW) -> str:
    """End-to-end latency of successful attempts, as the client saw it through the gateway."""
    cells = {"latency": (f"{STATE}({LATENCY_MS})", "latency_ms")}
    return f"""SELECT time,
    {_quantile_columns(f"{MERGE}(p_latency)", "ms")}
FROM (
    {_events(cells, (), window, raw_where=["status = 'ok'"], rolled_where=["status = 'ok'"])}
)
GROUP BY time
ORDER BY time"""  # noqa: S608


def time_to_first_token(window: Window = GRAFANA_WINDOW) -> str:
    cells = {"ttft": (f"{STATE}(assumeNotNull({TTFT_MS}))", "ttft_ms"), "timed": ("count()", "timed_streams")}
    return f"""SELECT time,
    {_quantile_columns(f"{MERGE}(p_ttft)", "ms")}
FROM (
    {_events(cells, (), window, raw_where=["stream", "first_token_at IS NOT NULL"], rolled_where=["stream"])}
)
GROUP BY time
HAVING sum(p_timed) > 0
ORDER BY time"""  # noqa: S608


def tokens_per_second(window: Window = GRAFANA_WINDOW) -> str:
    cells = {"input": ("sum(input_tokens)", "input_tokens"), "output": ("sum(output_tokens)", "output_tokens")}
    return f"""SELECT time,
    sum(p_input) / $__interval_s AS input_tokens_per_s,
    sum(p_output) / $__interval_s AS output_tokens_per_s
FROM (
    {_events(cells, (), window)}
)
GROUP BY time
ORDER BY time"""  # noqa: S608


def pipeline_lag(window: Window = GRAFANA_WINDOW) -> str:
    """Seconds from a request's end to its row in ClickHouse, bucketed by when the request started."""
    cells = {"lag": (f"{STATE}({LAG_S})", "lag_s"), "max_lag": (f"max({LAG_S})", "max_lag_s")}
    return f"""SELECT time,
    {_quantile_columns(f"{MERGE}(p_lag)", "s", (0.5, 0.95))},
    max(p_max_lag) AS max_s
FROM (
    {_events(cells, (), window)}
)
GROUP BY time
ORDER BY time"""  # noqa: S608


def status_breakdown(window: Window = GRAFANA_WINDOW) -> str:
    return f"""SELECT status, http_status, sum(p_attempts) AS attempts
FROM (
    {_events(ATTEMPTS, ("status", "http_status"), window, bucket=False)}
)
GROUP BY status, http_status
ORDER BY attempts DESC, status, http_status"""  # noqa: S608


def ops_panels(window: Window = GRAFANA_WINDOW) -> list[str]:
    """Every Gateway operations panel over ``window`` (the rollup tests compare rollups on and off)."""
    return [requests_per_second(window), error_rate_by_status(window), latency(window), time_to_first_token(window),
            tokens_per_second(window), pipeline_lag(window), status_breakdown(window)]
