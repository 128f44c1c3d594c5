"""Fake of Anthropic's Usage & Cost Admin API, from the shapes in Anthropic's documentation (see
``aimeter.provider_books.anthropic_books`` for what was checked and where).

``GET /v1/organizations/usage_report/messages`` and ``GET /v1/organizations/cost_report`` answer from the
seeded books (``admin_books``): ``x-api-key`` must be the admin key (else 401 ``authentication_error``) and
``anthropic-version`` present; ``group_by[]`` as documented; cost amounts are decimal strings in cents with
``currency: "USD"``; ``workspace_id`` is null for the default workspace and ``api_key_id`` for Workbench usage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from aimeter.fake_upstream import admin_books as ab
from aimeter.fake_upstream.anthropic_shapes import error_object

USAGE_GROUPS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window")
COST_GROUPS = ("workspace_id", "description")
DESCRIPTION_FIELDS = ("model", "token_type", "cost_type", "service_tier", "context_window")
USAGE_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
USAGE_SUMS = ("uncached_input_tokens", "cache_read_input_tokens", "output_tokens")
CREATION = ("ephemeral_1h_input_tokens", "ephemeral_5m_input_tokens")


class BadRequestError(ValueError):
    pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return ab.json_response(error_object(status, message, "req_fake_admin"), status, headers)


def _refusal(request: web.Request) -> web.Response | None:
    books = request.app[ab.BOOKS_KEY].of("anthropic")
    if request.headers.get("x-api-key", "") != books.admin_key:
        return _error(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return _error(400, "anthropic-version: header is required")
    if books.rate_limited > 0:
        books.rate_limited -= 1
        return _error(429, "Number of request tokens has exceeded your rate limit.", {"retry-after": "0"})
    return None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _params(q: Any, groups_allowed: tuple[str, ...], widths: dict[str, tuple[int, int]]
            ) -> tuple[datetime, datetime, str, list[str], int, int]:
    if "starting_at" not in q:
        raise BadRequestError("starting_at: field required")
    try:
        start = ab.parse_time(q["starting_at"])
        end = ab.parse_time(q["ending_at"]) if "ending_at" in q else datetime.now(UTC)
    except ValueError:
        raise BadRequestError("starting_at / ending_at: must be RFC 3339 timestamps") from None
    width = q.get("bucket_width", "1d")
    if width not in widths:
        raise BadRequestError(f"bucket_width: must be one of {', '.join(widths)}")
    groups = q.getall("group_by[]", []) + q.getall("group_by", [])
    bad = [g for g in groups if g not in groups_allowed]
    if bad:
        raise BadRequestError(f"group_by: invalid value(s) {', '.join(bad)}")
    default, maximum = widths[width]
    try:
        limit = int(q.get("limit", default))
        offset = ab.offset_of(q.get("page"))
    except ValueError as exc:
        raise BadRequestError(f"limit or page: {exc}") from None
    if not 1 <= limit <= maximum:
        raise BadRequestError(f"limit: must be between 1 and {maximum}")
    return start, end, width, groups, limit, offset


def _page(window: tuple[datetime, datetime, str, int, int], results: Any) -> web.Response:
    start, end, width, limit, offset = window
    all_buckets = ab.buckets(start, end, width)
    chosen, more = all_buckets[offset:offset + limit], offset + limit < len(all_buckets)
    data = [{"starting_at": _rfc3339(lo), "ending_at": _rfc3339(hi), "results": results(lo, hi)} for lo, hi in chosen]
    return ab.json_response({"data": data, "has_more": more, "next_page": ab.cursor(offset + limit) if more else None})


def _usage_sums(rs: list[dict[str, Any]]) -> dict[str, Any]:
    sums: dict[str, Any] = {f: ab.int_sum(rs, f) for f in USAGE_SUMS}
    sums["cache_creation"] = {f: sum(int((r.get("cache_creation") or {}).get(f) or 0) for r in rs) for f in CREATION}
    sums["server_tool_use"] = {"web_search_requests": sum(
        int((r.get("server_tool_use") or {}).get("web_search_requests") or 0) for r in rs)}
    return sums


async def usage_messages(request: web.Request) -> web.Response:
    """GET /v1/organizations/usage_report/messages."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    books = request.app[ab.BOOKS_KEY].of("anthropic")
    try:
        start, end, width, groups, limit, offset = _params(request.query, USAGE_GROUPS, USAGE_LIMITS)
    except BadRequestError as exc:
        return _error(400, str(exc))

    def results(lo: datetime, hi: datetime) -> list[dict[str, Any]]:
        rows = ab.group(ab.in_bucket(books.usage, lo, hi), groups, _usage_sums)
        return [{**{f: r[f] for f in (*USAGE_SUMS, "cache_creation", "server_tool_use")},
                 **{g: r.get(g) if g in groups else None for g in USAGE_GROUPS}} for r in rows]

    return _page((start, end, width, limit, offset), results)


async def cost_report(request: web.Request) -> web.Response:
    """GET /v1/organizations/cost_report: daily buckets only; amounts in cents as decimal strings."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    books = request.app[ab.BOOKS_KEY].of("anthropic")
    try:
        start, end, width, groups, limit, offset = _params(request.query, COST_GROUPS, {"1d": (7, 31)})
    except BadRequestError as exc:
        return _error(400, str(exc))
    keys = [*(["workspace_id"] if "workspace_id" in groups else []),
            *(["description", *DESCRIPTION_FIELDS] if "description" in groups else [])]

    def results(lo: datetime, hi: datetime) -> list[dict[str, Any]]:
        rows = ab.group(ab.in_bucket(books.costs, lo, hi), keys, lambda rs: {"cents": ab.decimal_sum(rs, "amount")})
        return [{"amount": f"{Decimal(r['cents']):f}", "currency": "USD",
                 **{f: r.get(f) if f in keys else None for f in ("workspace_id", "description", *DESCRIPTION_FIELDS)}}
                for r in rows]

    return _page((start, end, width, limit, offset), results)


ROUTES = (("GET", "/v1/organizations/usage_report/messages", usage_messages),
          ("GET", "/v1/organizations/cost_report", cost_report))
