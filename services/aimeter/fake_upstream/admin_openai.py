"""Fake of OpenAI's organization Usage (completions, embeddings) and Costs APIs, from the shapes in OpenAI's API
reference (see ``aimeter.provider_books.openai_books`` for what was checked and where).

``GET /v1/organization/usage/completions``, ``.../usage/embeddings`` and ``GET /v1/organization/costs``
answer from the seeded books (``admin_books``). ``Authorization: Bearer <admin key>`` or 401 in OpenAI's error
shape (the message shows the key masked, as OpenAI's does); parameter errors are 400s; costs accept
``bucket_width=1d`` only; amounts are JSON numbers with ``currency: "usd"``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from aimeter.fake_upstream import admin_books as ab
from aimeter.fake_upstream.openai_shapes import error_object

USAGE_GROUPS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
EMBEDDING_GROUPS = ("project_id", "user_id", "api_key_id", "model")
COST_GROUPS = ("project_id", "line_item", "api_key_id")
USAGE_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # (default, max) buckets per page
USAGE_SUMS = ("input_tokens", "input_cached_tokens", "output_tokens", "input_audio_tokens", "output_audio_tokens",
              "num_model_requests")


class BadRequestError(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _masked(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


def _refusal(request: web.Request) -> web.Response | None:
    books = request.app[ab.BOOKS_KEY].of("openai")
    auth = request.headers.get("Authorization", "")
    key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    if key != books.admin_key:
        message = (f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.") if key else "You didn't provide an API key."
        return ab.json_response(error_object(message, "invalid_request_error", None, "invalid_api_key"), 401)
    if books.rate_limited > 0:
        books.rate_limited -= 1
        return ab.json_response(error_object("Rate limit reached for organization usage requests.",
                                             "requests", None, "rate_limit_exceeded"), 429, {"retry-after": "0"})
    return None


def _window(q: Any) -> tuple[datetime, datetime]:
    if "start_time" not in q:
        raise BadRequestError("Missing required parameter: 'start_time'.", "start_time")
    try:
        start = datetime.fromtimestamp(int(q["start_time"]), UTC)
        end = datetime.fromtimestamp(int(q["end_time"]), UTC) if "end_time" in q else datetime.now(UTC)
    except ValueError:
        raise BadRequestError("start_time and end_time must be Unix seconds.", "start_time") from None
    return start, end


def _groups(q: Any, allowed: tuple[str, ...]) -> list[str]:
    groups = q.getall("group_by", []) + q.getall("group_by[]", [])
    bad = [g for g in groups if g not in allowed]
    if bad:
        raise BadRequestError(f"Invalid group_by value(s): {', '.join(bad)}; supported: {', '.join(allowed)}.",
                              "group_by")
    return groups


def _limit(q: Any, default: int, maximum: int) -> int:
    try:
        limit = int(q.get("limit", default))
    except ValueError:
        raise BadRequestError("limit must be an integer.", "limit") from None
    if not 1 <= limit <= maximum:
        raise BadRequestError(f"limit must be between 1 and {maximum}.", "limit")
    return limit


def _page(request: web.Request, width: str, limit: int, obj: str, results: Any) -> web.Response:
    start, end = _window(request.query)
    all_buckets = ab.buckets(start, end, width)
    try:
        offset = ab.offset_of(request.query.get("page"))
    except ValueError as exc:
        raise BadRequestError(str(exc), "page") from None
    chosen = all_buckets[offset:offset + limit]
    more = offset + limit < len(all_buckets)
    data = [{"object": "bucket", "start_time": int(lo.timestamp()), "end_time": int(hi.timestamp()),
             "results": [{"object": obj, **r} for r in results(lo, hi)]} for lo, hi in chosen]
    return ab.json_response({"object": "page", "data": data, "has_more": more,
                             "next_page": ab.cursor(offset + limit) if more else None})


async def _usage_report(request: web.Request, kind: str, allowed: tuple[str, ...],
                        sums: tuple[str, ...]) -> web.Response:
    """One usage endpoint: bucket_width, group_by and paging as documented; ``kind`` names the books and object."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    q, books = request.query, request.app[ab.BOOKS_KEY].of("openai")
    try:
        width = q.get("bucket_width", "1d")
        if width not in USAGE_LIMITS:
            raise BadRequestError("bucket_width must be one of 1m, 1h, 1d.", "bucket_width")
        groups, limit = _groups(q, allowed), _limit(q, *USAGE_LIMITS[width])
        source = books.usage if kind == "completions" else books.embeddings

        def results(lo: datetime, hi: datetime) -> list[dict[str, Any]]:
            rows = ab.group(ab.in_bucket(source, lo, hi), groups, lambda rs: {f: ab.int_sum(rs, f) for f in sums})
            return [{**{g: r.get(g) if g in groups else None for g in allowed}, **{f: r[f] for f in sums}}
                    for r in rows]

        return _page(request, width, limit, f"organization.usage.{kind}.result", results)
    except BadRequestError as exc:
        return ab.json_response(error_object(str(exc), "invalid_request_error", exc.param), 400)


async def usage_completions(request: web.Request) -> web.Response:
    """GET /v1/organization/usage/completions."""
    return await _usage_report(request, "completions", USAGE_GROUPS, USAGE_SUMS)


async def usage_embeddings(request: web.Request) -> web.Response:
    """GET /v1/organization/usage/embeddings: input tokens and requests only."""
    return await _usage_report(request, "embeddings", EMBEDDING_GROUPS, ("input_tokens", "num_model_requests"))


async def costs(request: web.Request) -> web.Response:
    """GET /v1/organization/costs: daily buckets only."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    q, books = request.query, request.app[ab.BOOKS_KEY].of("openai")
    try:
        if q.get("bucket_width", "1d") != "1d":
            raise BadRequestError("bucket_width: only 1d is supported for costs.", "bucket_width")
        groups, limit = _groups(q, COST_GROUPS), _limit(q, 7, 180)

        def results(lo: datetime, hi: datetime) -> list[dict[str, Any]]:
            rows = ab.group(ab.in_bucket(books.costs, lo, hi), groups,
                            lambda rs: {"value": ab.decimal_sum(rs, "amount")})
            return [{"amount": {"value": Decimal(r["value"]), "currency": "usd"},
                     **{g: r.get(g) if g in groups else None for g in COST_GROUPS}} for r in rows]

        return _page(request, "1d", limit, "organization.costs.result", results)
    except BadRequestError as exc:
        return ab.json_response(error_object(str(exc), "invalid_request_error", exc.param), 400)


ROUTES = (("GET", "/v1/organization/usage/completions", usage_completions),
          ("GET", "/v1/organization/usage/embeddings", usage_embeddings),
          ("GET", "/v1/organization/costs", costs))
