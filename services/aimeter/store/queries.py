"""Report and re-rating SQL, built as text plus parameters (pure), run by whoever holds a client.

Every report reads ``FINAL`` (``usage_costs``, ``usage_events``, ``usage_cost_versions``,
``gpu_cost_periods``) so redelivered events and re-rated versions never double a total.
Unpriced requests are counted, never folded into the cost as $0. Money stays Decimal: zeros are
typed ``Decimal(38, 12)`` so no sum is ever widened to Float.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

SPEND_DIMENSIONS = ("team", "project", "model", "backend", "deployment", "provider", "user")
WINDOW = "started_at >= {since:DateTime64(3, 'UTC')} AND started_at < {until:DateTime64(3, 'UTC')}"
ZERO = "toDecimal128(0, 12)"
NO_COST = "CAST(NULL AS Nullable(Decimal(38, 12)))"
ALLOCATION = "gpu_cost_allocation(since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')})"
# The columns every part of the spend union yields, and what a part that has no such figure puts there.
SPEND_PARTS = {
    "requests": "toUInt64(0)", "input_tokens": "toUInt64(0)", "cached_input_tokens": "toUInt64(0)",
    "output_tokens": "toUInt64(0)", "unpriced": "toUInt64(0)", "cost_usd": NO_COST, "loaded_usd": ZERO,
    "reference_usd": ZERO, "gpu_usd": ZERO, "charged_usd": NO_COST,
}  # fmt: skip


def _part(by: str, source: str, values: dict[str, str], where: str = "") -> str:
    """One SELECT of the union. Output names get a ``p_`` prefix: a ClickHouse alias shadows the column of the
    same name in every other expression of the SELECT, so ``NULL AS cost_usd`` would blank ``cost_usd``."""
    cells = ", ".join(f"{values.get(name, default)} AS p_{name}" for name, default in SPEND_PARTS.items())
    sql = f"SELECT {by} AS key, {cells} FROM {source}"  # noqa: S608 - fixed names only; values are parameters
    return sql + (f" WHERE {where}" if where else "")


def _spend_parts(by: str, corrections: bool) -> list[str]:
    priced = _part(by, "usage_costs FINAL", {
        "requests": "toUInt64(1)", "input_tokens": "input_tokens", "cached_input_tokens": "cache_read_input_tokens",
        "output_tokens": "output_tokens", "unpriced": "toUInt64(pricing_status = 'unpriced')", "cost_usd": "cost_usd",
        "loaded_usd": f"if(deployment = 'self_hosted', {ZERO}, ifNull(cost_usd, {ZERO}))",
        "reference_usd": f"if(deployment = 'self_hosted', ifNull(reference_cost_usd, {ZERO}), {ZERO})",
    }, WINDOW)
    gpu = _part(by, ALLOCATION, {"loaded_usd": "cost_usd", "gpu_usd": "cost_usd"})
    parts = [priced, gpu]
    if corrections:
        charged = (f"(SELECT {by}, argMin(tuple(cost_usd), rating_version).1 AS charged "  # noqa: S608 - as above
                   f"FROM usage_cost_versions FINAL WHERE {WINDOW} GROUP BY event_id, {by})")
        parts.append(_part(by, charged, {"charged_usd": "charged"}))
    return parts


def spend_query(by: str, since: datetime, until: datetime, *, corrections: bool = False) -> tuple[str, dict[str, Any]]:
    """Spend per ``by`` over [since, until): marginal, fully loaded and savings versus reference.

    * ``cost_usd``: marginal, what the pricer charged each request (NULL when all were unpriced).
    * ``loaded_cost_usd``: proprietary cost plus the self-hosted GPU hours allocated by token share
      (``gpu_cost_allocation``; whole hours, so an idle GPU shows up under the key ``idle``).
    * ``savings_usd``: what the self-hosted tokens would have cost on each backend's reference model,
      minus their fully loaded GPU cost (so idle capacity counts against the savings).
    * with ``corrections``: ``as_charged_cost_usd`` (rating version 0) and ``correction_usd``.
    """
    if by not in SPEND_DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(SPEND_DIMENSIONS)}, got {by!r}")
    union = "\n    UNION ALL\n    ".join(_spend_parts(by, corrections))
    extra = (f",\n    sum(p_charged_usd) AS as_charged_cost_usd,\n"
             f"    ifNull(sum(p_cost_usd), {ZERO}) - ifNull(sum(p_charged_usd), {ZERO}) AS correction_usd"
             ) if corrections else ""
    sql = f"""
SELECT
    key,
    sum(p_requests) AS requests,
    sum(p_input_tokens) AS input_tokens,
    sum(p_cached_input_tokens) AS cached_input_tokens,
    sum(p_output_tokens) AS output_tokens,
    sum(p_cost_usd) AS cost_usd,
    sum(p_loaded_usd) AS loaded_cost_usd,
    sum(p_reference_usd) AS reference_cost_usd,
    sum(p_reference_usd) - sum(p_gpu_usd) AS savings_usd,
    sum(p_unpriced) AS unpriced_requests{extra}
FROM (
    {union}
)
GROUP BY key
ORDER BY loaded_cost_usd DESC, key
"""  # noqa: S608 - `by` is checked against a fixed list above; values are bound parameters
    return sql, {"since": since, "until": until}


def count_query() -> str:
    """Exact number of distinct events stored; used to wait for the pipeline and to reconcile."""
    return "SELECT count() FROM usage_events FINAL"


def window_count_query(since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """Distinct usage events in [since, until): the work a re-rating has to do."""
    return f"SELECT count() FROM usage_events FINAL WHERE {WINDOW}", {"since": since, "until": until}  # noqa: S608


def events_page_query(columns: Sequence[str], since: datetime, until: datetime, after: tuple[datetime, UUID] | None,
                      limit: int) -> tuple[str, dict[str, Any]]:
    """One page of usage events in time order, after ``(started_at, event_id)`` (keyset paging: no OFFSET)."""
    params: dict[str, Any] = {"since": since, "until": until, "limit": limit}
    where = WINDOW
    if after is not None:
        where += " AND (started_at, event_id) > ({after_at:DateTime64(3, 'UTC')}, {after_id:UUID})"
        params |= {"after_at": after[0], "after_id": after[1]}
    sql = (f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM usage_events FINAL WHERE {where} "  # noqa: S608
           "ORDER BY started_at, event_id LIMIT {limit:UInt32}")
    return sql, params


def current_costs_query(columns: Sequence[str], ids: Sequence[UUID], since: datetime,
                        until: datetime) -> tuple[str, dict[str, Any]]:
    """The priced rows in force now (latest rating version) for these events."""
    sql = (f"SELECT event_id, {', '.join(f'`{c}`' for c in columns)} FROM usage_costs FINAL "  # noqa: S608
           f"WHERE {WINDOW} AND event_id IN {{ids:Array(UUID)}}")
    return sql, {"since": since, "until": until, "ids": list(ids)}


def latest_rating_version_query() -> str:
    """Highest rating version ever written; a re-rating writes the next one so it wins under FINAL."""
    return "SELECT max(rating_version) FROM usage_costs"


def corrections_by_team_query(since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """As charged versus now, per team, for events re-rated at least once (the ``cost_corrections`` view)."""
    sql = f"""
SELECT team, count() AS events, sum(charged_cost_usd) AS charged_cost_usd, sum(current_cost_usd) AS current_cost_usd,
       sum(correction_usd) AS correction_usd
FROM cost_corrections WHERE {WINDOW}
GROUP BY team ORDER BY team
"""  # noqa: S608
    return sql, {"since": since, "until": until}
