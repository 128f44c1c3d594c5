"""OpenAI's organization Usage and Costs APIs: query parameters and the documented response shapes.

Checked against OpenAI's API reference (developers.openai.com/api/reference, Usage: "Completions" and "Costs";
the openai-cookbook notebook ``completions_usage_api``), 2026-12-06:

* ``GET /v1/organization/usage/completions``: ``start_time`` (Unix seconds, inclusive, required), ``end_time``
  (exclusive), ``bucket_width`` ``1m``/``1h``/``1d`` (default ``1d``), ``group_by`` any of ``project_id``,
  ``user_id``, ``api_key_id``, ``model``, ``batch``, ``service_tier``; ``limit`` buckets per page (1d: default 7,
  max 31; 1h: 24/168; 1m: 60/1440); ``page`` = the previous answer's ``next_page``; the answer is
  ``{object: "page", data: [bucket], has_more, next_page}``, a bucket ``{start_time, end_time, results}``.
* A result: ``input_tokens`` (text input, cached included), ``input_cached_tokens``, ``output_tokens``,
  ``input_audio_tokens`` (audio input, cached included), ``output_audio_tokens``, ``num_model_requests``, and the
  grouping fields, ``null`` unless grouped by them.
* ``GET /v1/organization/costs``: ``bucket_width`` ``1d`` only, ``group_by`` ``project_id`` / ``line_item``,
  ``limit`` 1..180 (default 7); a result's ``amount`` is ``{value: number, currency: "usd"}``.

* ``GET /v1/organization/usage/embeddings``: the same parameters and paging, ``group_by`` ``project_id``,
  ``user_id``, ``api_key_id``, ``model``; a result carries ``input_tokens`` and ``num_model_requests``. The
  completions report does not hold embeddings, so both are pulled (the gateway meters both).

Audio is counted in the ledger's ``input_tokens`` / ``output_tokens`` (OTel: every token), so it is added here.
The Admin key goes in ``Authorization: Bearer``. Amounts are read as Decimal from the JSON text, never float.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aimeter.provider_books.books import ALL, Figures, Key

USAGE_PATH = "/v1/organization/usage/completions"
EMBEDDINGS_PATH = "/v1/organization/usage/embeddings"
USAGE_PATHS = (USAGE_PATH, EMBEDDINGS_PATH)  # same parameters, same row parser (embeddings have no output)
COSTS_PATH = "/v1/organization/costs"
DEFAULT_BASE_URL = "https://api.openai.com"
USAGE_LIMIT = {"1h": 168, "1d": 31}  # the documented maximum buckets per page
COSTS_LIMIT = 180

Params = list[tuple[str, str]]


def auth_headers(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def usage_params(since: datetime, until: datetime, bucket: str, scoped: bool) -> Params:
    groups = ["model", "project_id"] if scoped else ["model"]
    return [("start_time", str(int(since.timestamp()))), ("end_time", str(int(until.timestamp()))),
            ("bucket_width", bucket), ("limit", str(USAGE_LIMIT[bucket])), *(("group_by", g) for g in groups)]


def cost_params(since: datetime, until: datetime, scoped: bool) -> Params:
    groups = ["project_id", "line_item"] if scoped else ["line_item"]
    return [("start_time", str(int(since.timestamp()))), ("end_time", str(int(until.timestamp()))),
            ("bucket_width", "1d"), ("limit", str(COSTS_LIMIT)), *(("group_by", g) for g in groups)]


def next_page(body: dict[str, Any]) -> str | None:
    """The cursor for the next request, or None on the last page (``has_more`` false or no cursor)."""
    cursor = body.get("next_page")
    return str(cursor) if body.get("has_more") and cursor else None


def _scope(result: dict[str, Any], scoped: bool) -> str:
    return (result.get("project_id") or "") if scoped else ALL


def _bucket_start(bucket: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(bucket["start_time"]), UTC)


def usage_rows(body: dict[str, Any], scoped: bool) -> list[tuple[Key, Figures]]:
    """One page of completions or embeddings usage as ledger-semantics rows; empty buckets yield nothing."""
    rows = []
    for bucket in body["data"]:
        start = _bucket_start(bucket)
        for r in bucket.get("results") or ():
            figures = Figures(
                input_tokens=int(r.get("input_tokens") or 0) + int(r.get("input_audio_tokens") or 0),
                cache_read_tokens=int(r.get("input_cached_tokens") or 0),
                output_tokens=int(r.get("output_tokens") or 0) + int(r.get("output_audio_tokens") or 0),
                requests=int(r.get("num_model_requests") or 0))
            rows.append((Key(start, r.get("model") or "", _scope(r, scoped)), figures))
    return rows


def cost_rows(body: dict[str, Any], scoped: bool) -> list[tuple[Key, Figures]]:
    """One page of daily costs, per project (or all), every model together (``line_item`` is summed)."""
    rows = []
    for bucket in body["data"]:
        start = _bucket_start(bucket)
        for r in bucket.get("results") or ():
            amount = r.get("amount") or {}
            currency = str(amount.get("currency") or "usd").lower()
            if currency != "usd":
                raise ValueError(f"OpenAI costs: amount in {currency!r}, expected usd (bucket {start:%Y-%m-%d})")
            value = amount.get("value")
            usd = Decimal(str(value)) if value is not None else Decimal(0)
            rows.append((Key(start, ALL, _scope(r, scoped)), Figures(usd=usd)))
    return rows
