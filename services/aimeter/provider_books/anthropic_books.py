"""Anthropic's Usage & Cost Admin API: query parameters and the documented response shapes.

Checked against Anthropic's documentation, 2026-12-06: "Get Messages Usage Report" and "Get Cost Report"
(platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages, .../admin/cost_report/retrieve) and the
guide "Usage and Cost API" (docs.anthropic.com/en/api/usage-cost-api):

* ``GET /v1/organizations/usage_report/messages``: ``starting_at`` (RFC 3339, required; buckets snap to the
  start of the minute/hour/day in UTC), ``ending_at``, ``bucket_width`` ``1m``/``1h``/``1d``, ``group_by[]`` any
  of ``api_key_id``, ``workspace_id``, ``model``, ``service_tier``, ``context_window`` (and newer ones), ``limit``
  buckets per page (1d: default 7, max 31; 1h: 24/168; 1m: 60/1440), ``page`` = the previous ``next_page``.
  Headers ``x-api-key`` (an Admin key, ``sk-ant-admin...``) and ``anthropic-version``.
* A result: ``uncached_input_tokens``, ``cache_read_input_tokens``,
  ``cache_creation.{ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}``, ``output_tokens``,
  ``server_tool_use.web_search_requests`` and the grouping fields. No request count. ``workspace_id`` is null for
  the default workspace, ``api_key_id`` null for Console/Workbench usage.
* ``GET /v1/organizations/cost_report``: ``bucket_width`` ``1d`` only, ``group_by[]`` ``workspace_id`` /
  ``description``; ``amount`` is a decimal string in the currency's lowest unit, cents ("123.45" USD is $1.23),
  ``currency`` "USD"; ``model``, ``token_type``, ``cost_type``, ``service_tier``, ``context_window`` are null
  unless grouped by description (``model`` also null for non-token costs). Priority Tier costs are not in it.

Anthropic's input classes are disjoint; the ledger's ``input_tokens`` is their sum (OTel semantics).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aimeter.provider_books.books import ALL, NON_TOKEN, Figures, Key

USAGE_PATH = "/v1/organizations/usage_report/messages"
USAGE_PATHS = (USAGE_PATH,)
COSTS_PATH = "/v1/organizations/cost_report"
DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
USAGE_LIMIT = {"1h": 168, "1d": 31}
COSTS_LIMIT = 31
CENTS = Decimal(100)

Params = list[tuple[str, str]]


def auth_headers(admin_key: str) -> dict[str, str]:
    return {"x-api-key": admin_key, "anthropic-version": API_VERSION}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_params(since: datetime, until: datetime, bucket: str, scoped: bool) -> Params:
    groups = ["model", "workspace_id"] if scoped else ["model"]
    return [("starting_at", rfc3339(since)), ("ending_at", rfc3339(until)), ("bucket_width", bucket),
            ("limit", str(USAGE_LIMIT[bucket])), *(("group_by[]", g) for g in groups)]


def cost_params(since: datetime, until: datetime, scoped: bool) -> Params:
    groups = ["workspace_id", "description"] if scoped else ["description"]
    return [("starting_at", rfc3339(since)), ("ending_at", rfc3339(until)), ("bucket_width", "1d"),
            ("limit", str(COSTS_LIMIT)), *(("group_by[]", g) for g in groups)]


def next_page(body: dict[str, Any]) -> str | None:
    cursor = body.get("next_page")
    return str(cursor) if body.get("has_more") and cursor else None


def _start(bucket: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(bucket["starting_at"]).replace("Z", "+00:00")).astimezone(UTC)


def _scope(result: dict[str, Any], scoped: bool) -> str:
    return (result.get("workspace_id") or "") if scoped else ALL


def usage_rows(body: dict[str, Any], scoped: bool) -> list[tuple[Key, Figures]]:
    rows = []
    for bucket in body["data"]:
        start = _start(bucket)
        for r in bucket.get("results") or ():
            creation = r.get("cache_creation") or {}
            write = int(creation.get("ephemeral_5m_input_tokens") or 0) + int(
                creation.get("ephemeral_1h_input_tokens") or 0)
            read = int(r.get("cache_read_input_tokens") or 0)
            figures = Figures(input_tokens=int(r.get("uncached_input_tokens") or 0) + read + write,
                              cache_read_tokens=read, cache_write_tokens=write,
                              output_tokens=int(r.get("output_tokens") or 0))
            rows.append((Key(start, r.get("model") or "", _scope(r, scoped)), figures))
    return rows


def cost_rows(body: dict[str, Any], scoped: bool) -> list[tuple[Key, Figures]]:
    """Daily cost per model (and workspace); cents as decimal strings become exact USD."""
    rows = []
    for bucket in body["data"]:
        start = _start(bucket)
        for r in bucket.get("results") or ():
            currency = str(r.get("currency") or "USD").upper()
            if currency != "USD":
                raise ValueError(f"Anthropic cost_report: amount in {currency!r}, expected USD "
                                 f"(bucket {start:%Y-%m-%d})")
            usd = Decimal(str(r.get("amount") or "0")) / CENTS
            rows.append((Key(start, r.get("model") or NON_TOKEN, _scope(r, scoped)), Figures(usd=usd)))
    return rows
