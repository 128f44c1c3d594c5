"""``aimeter spend --by key`` and ``--by tag:<name>``: spend per gateway key or per value of one request tag.

These two are per-request attributes. The GPU hours of a self-hosted backend are allocated to teams by token
share (``gpu_cost_allocation``), never to keys or tags, and the hourly rollups keep neither; so these reports
read the priced requests themselves (``usage_costs FINAL``, tags from ``usage_events FINAL``) and give the
marginal cost, tokens and unpriced count, not the loaded cost or savings that ``--by team`` shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aimeter.pricer.pricebook import UNMETERED, UNPRICED
from aimeter.reports.sql import bound_window

MAX_TAG_NAME = 64  # as the gateway bounds a tag's key (attribution.MAX_TAG_LEN)
NO_KEY = "(no key)"  # requests of auth=none gateways carry no key id
UNTAGGED = "(untagged)"
NOT_PRICED = f"('{UNPRICED}', '{UNMETERED}')"  # requests with no cost: counted, never a silent $0


def per_request_dimension(by: str) -> bool:
    """Whether ``by`` is one of this module's (``key``, ``tag:<name>``) rather than a spend_query dimension."""
    return by == "key" or by.startswith("tag:")


def tag_name(by: str) -> str:
    name = by.removeprefix("tag:")
    if not name or len(name) > MAX_TAG_NAME or "," in name or "=" in name:
        raise ValueError(f"--by tag:<name> needs a tag name of 1 to {MAX_TAG_NAME} characters without ',' or '=', "
                         f"as sent in X-Aimeter-Tags (got {by!r})")
    return name


def spend_by_request_query(by: str, since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """One row per key (with its team) or per tag value, over [since, until); the tag name is a bound parameter."""
    window = bound_window(since, until)
    params: dict[str, Any] = dict(window.params)
    measures = (f"count() AS requests, sum(c.input_tokens) AS input_tokens, "
                f"sum(c.cache_read_input_tokens) AS cached_input_tokens, sum(c.output_tokens) AS output_tokens, "
                f"sum(c.cost_usd) AS cost_usd, countIf(c.pricing_status IN {NOT_PRICED}) AS unpriced_requests")
    where = window.where("c.started_at")
    if by == "key":
        sql = (f"SELECT if(c.api_key_id = '', '{NO_KEY}', c.api_key_id) AS key, any(c.team) AS team, {measures}\n"
               f"FROM usage_costs AS c FINAL\nWHERE {where}\nGROUP BY key\nORDER BY cost_usd DESC, key")
        return sql, params
    params["tag"] = tag_name(by)
    # Tags are on the event, not the priced row: join on event_id within the same window (both FINAL).
    sql = (f"SELECT if(e.tag = '', '{UNTAGGED}', e.tag) AS tag, {measures}\n"  # noqa: S608 - constants; tag bound
           f"FROM usage_costs AS c FINAL\n"
           f"LEFT JOIN (SELECT event_id, tags[{{tag:String}}] AS tag FROM usage_events FINAL "
           f"WHERE {window.where('started_at')}) AS e ON c.event_id = e.event_id\n"
           f"WHERE {where}\nGROUP BY tag\nORDER BY cost_usd DESC, tag")
    return sql, params
