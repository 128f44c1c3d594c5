"""Ledger SQL beside the spend figures: re-rating pages, counts, corrections and self-hosted use (pure).

Every report reads ``FINAL`` (``usage_costs``, ``usage_events``, ``usage_cost_versions``,
``gpu_cost_periods``) so redelivered events and re-rated versions never double a total.
Unpriced and unmetered requests are counted, never folded into the cost as $0. Money stays Decimal: zeros are
typed ``Decimal(38, 12)`` so no sum is ever widened to Float.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from aimeter.reports.sql import ALLOCATION, WINDOW


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


def gpu_cost_query(since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """The whole GPU cost billed over [since, until) (idle included): what a GPU period correction moves."""
    sql = f"SELECT sum(cost_usd) FROM {ALLOCATION}"  # noqa: S608 - fixed text; values are parameters
    return sql, {"since": since, "until": until}


def self_hosted_use_query(since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """Per self-hosted backend over [since, until): GPU time billed, capacity, tokens used, idle, and the
    marginal cost its requests were charged; what makes fully loaded versus marginal readable."""
    sql = f"""
SELECT a.backend, a.gpu_usd, a.capacity_tokens, a.used_tokens, a.idle_usd, m.marginal_usd
FROM (
    SELECT backend, sum(cost_usd) AS gpu_usd, sumIf(capacity_tokens, team = 'idle') AS capacity_tokens,
           sum(tokens) AS used_tokens, sumIf(cost_usd, team = 'idle') AS idle_usd
    FROM {ALLOCATION} GROUP BY backend
) AS a
LEFT JOIN (
    SELECT backend, sum(cost_usd) AS marginal_usd FROM usage_costs FINAL
    WHERE deployment = 'self_hosted' AND {WINDOW} GROUP BY backend
) AS m ON a.backend = m.backend
ORDER BY a.backend
"""  # noqa: S608 - fixed text; values are parameters
    return sql, {"since": since, "until": until}
