"""Report SQL, built as text plus parameters (pure), run by whoever holds a client.

Every report reads ``usage_costs FINAL`` so redelivered events and re-rated versions never
double a total. Unpriced requests are counted, never folded into the cost as $0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

SPEND_DIMENSIONS = ("team", "project", "model", "backend", "deployment", "provider", "user")


def spend_query(by: str, since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """Spend per ``by`` over [since, until), largest first, with request and token totals."""
    if by not in SPEND_DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(SPEND_DIMENSIONS)}, got {by!r}")
    sql = f"""
SELECT
    {by} AS key,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(cache_read_input_tokens) AS cached_input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost_usd,
    sumIf(reference_cost_usd, deployment = 'self_hosted') AS reference_cost_usd,
    countIf(pricing_status = 'unpriced') AS unpriced_requests
FROM usage_costs FINAL
WHERE started_at >= {{since:DateTime64(3, 'UTC')}} AND started_at < {{until:DateTime64(3, 'UTC')}}
GROUP BY key
ORDER BY cost_usd DESC, key
"""  # noqa: S608 - `by` is checked against a fixed list above; values are bound parameters
    return sql, {"since": since, "until": until}


def count_query() -> str:
    """Exact number of distinct events stored; used to wait for the pipeline and to reconcile."""
    return "SELECT count() FROM usage_events FINAL"
