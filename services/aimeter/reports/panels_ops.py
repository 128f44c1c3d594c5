"""SQL of the Gateway operations panels: what the gateways did, from the usage ledger (pure).

Every upstream attempt is one row of ``usage_events`` (errors and cancelled streams included), read
with ``FINAL`` so a redelivered event is counted once. Durations come from the gateway's own
timestamps; the pipeline lag is ``ingested_at`` (set by ClickHouse when the pricer's insert landed)
minus ``ended_at`` (when the gateway finished the request).
"""

from __future__ import annotations

from aimeter.reports.panels import events_where

BUCKET = "$__timeInterval(started_at)"


def _quantiles(expr: str, unit: str) -> str:
    return ",\n    ".join(f"quantile({q})({expr}) AS p{int(q * 100)}_{unit}" for q in (0.5, 0.95, 0.99))


def requests_per_second() -> str:
    return f"""SELECT
    {BUCKET} AS time,
    count() / $__interval_s AS requests_per_s
FROM usage_events FINAL
WHERE {events_where()}
GROUP BY time
ORDER BY time"""  # noqa: S608 - fixed text and plugin macros


def error_rate_by_status() -> str:
    """Share of each bucket's attempts that ended in each non-ok status (upstream_error, timeout, …)."""
    return f"""SELECT time, status, attempts / total AS error_rate
FROM (
    SELECT
        {BUCKET} AS time,
        status,
        count() AS attempts,
        sum(count()) OVER (PARTITION BY time) AS total
    FROM usage_events FINAL
    WHERE {events_where()}
    GROUP BY time, status
)
WHERE status != 'ok'
ORDER BY time, status"""  # noqa: S608


def latency() -> str:
    """End-to-end latency of successful attempts, as the client saw it through the gateway."""
    return f"""SELECT
    {BUCKET} AS time,
    {_quantiles("dateDiff('millisecond', started_at, ended_at)", "ms")}
FROM usage_events FINAL
WHERE {events_where("status = 'ok'")}
GROUP BY time
ORDER BY time"""  # noqa: S608


def time_to_first_token() -> str:
    return f"""SELECT
    {BUCKET} AS time,
    {_quantiles("dateDiff('millisecond', started_at, first_token_at)", "ms")}
FROM usage_events FINAL
WHERE {events_where("stream", "first_token_at IS NOT NULL")}
GROUP BY time
ORDER BY time"""  # noqa: S608


def tokens_per_second() -> str:
    return f"""SELECT
    {BUCKET} AS time,
    sum(input_tokens) / $__interval_s AS input_tokens_per_s,
    sum(output_tokens) / $__interval_s AS output_tokens_per_s
FROM usage_events FINAL
WHERE {events_where()}
GROUP BY time
ORDER BY time"""  # noqa: S608


def pipeline_lag() -> str:
    """Seconds from a request's end to its row in ClickHouse, bucketed by when the request ended."""
    return f"""SELECT
    $__timeInterval(ended_at) AS time,
    quantile(0.5)(lag_s) AS p50_s,
    quantile(0.95)(lag_s) AS p95_s,
    max(lag_s) AS max_s
FROM (
    SELECT ended_at, dateDiff('millisecond', ended_at, ingested_at) / 1000 AS lag_s
    FROM usage_events FINAL
    WHERE {events_where(time_col="ended_at")}
)
GROUP BY time
ORDER BY time"""  # noqa: S608


def status_breakdown() -> str:
    return f"""SELECT status, http_status, count() AS attempts
FROM usage_events FINAL
WHERE {events_where()}
GROUP BY status, http_status
ORDER BY attempts DESC, status, http_status"""  # noqa: S608
