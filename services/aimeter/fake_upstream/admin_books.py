"""The fake provider's books, behind the fake admin APIs (``admin_openai``, ``admin_anthropic``).

Tests seed what the provider "billed" with ``POST /fake-admin/books``: JSON with, per provider, its
``admin_key`` and its ``usage``, ``costs`` and (OpenAI) ``embeddings`` records, each with an ``at`` timestamp
and the provider's own field names. ``DELETE /fake-admin/books`` clears them; ``rate_limit: {provider: n}``
makes the next n admin requests answer 429. The admin routes answer from these records the way the providers
document: every bucket of the window, empty ones included, grouped by the requested fields (``null`` where not
grouped or absent), paged by ``limit`` buckets with ``has_more`` / ``next_page``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
DEFAULT_KEYS = {"openai": "sk-admin-fake", "anthropic": "sk-ant-admin01-fake"}
Record = dict[str, Any]


@dataclass
class ProviderBooks:
    admin_key: str
    usage: list[Record] = field(default_factory=list)
    costs: list[Record] = field(default_factory=list)
    embeddings: list[Record] = field(default_factory=list)  # OpenAI only: its embeddings usage report
    rate_limited: int = 0


@dataclass
class Books:
    providers: dict[str, ProviderBooks] = field(
        default_factory=lambda: {p: ProviderBooks(k) for p, k in DEFAULT_KEYS.items()})

    def of(self, provider: str) -> ProviderBooks:
        return self.providers[provider]


BOOKS_KEY = web.AppKey("fake_admin_books", Books)


def parse_time(value: Any) -> datetime:
    text = str(value).replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def snap(moment: datetime, width: str) -> datetime:
    """Bucket start in UTC, as both providers document (snapped to the minute/hour/day)."""
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if width in ("1h", "1d"):
        moment = moment.replace(minute=0)
    if width == "1d":
        moment = moment.replace(hour=0)
    return moment


def buckets(start: datetime, end: datetime, width: str) -> list[tuple[datetime, datetime]]:
    step, out, at = WIDTHS[width], [], snap(start, width)
    while at < end:
        out.append((at, at + step))
        at += step
    return out


def cursor(offset: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(offset).encode()).decode()


def offset_of(page: str | None) -> int:
    if not page:
        return 0
    try:
        return int(base64.urlsafe_b64decode(page.removeprefix("page_").encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"invalid page token {page!r}") from None


def group(records: Iterable[Record], fields: list[str], sums: Callable[[list[Record]], Record]) -> list[Record]:
    """Records grouped by ``fields`` (in the order first seen), each group summed by ``sums``."""
    groups: dict[tuple[Any, ...], list[Record]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(f) for f in fields), []).append(r)
    return [{**dict(zip(fields, k, strict=True)), **sums(rs)} for k, rs in groups.items()]


def in_bucket(records: Iterable[Record], lo: datetime, hi: datetime) -> list[Record]:
    return [r for r in records if lo <= parse_time(r["at"]) < hi]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body, default=_number), content_type="application/json",
                        headers=headers)


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):  # a JSON number, as the provider sends it (its shortest decimal text)
        return float(value)
    raise TypeError(type(value).__name__)


def decimal_sum(records: list[Record], name: str) -> Decimal:
    return sum((Decimal(str(r.get(name) or 0)) for r in records), Decimal(0))


def int_sum(records: list[Record], name: str) -> int:
    return sum(int(r.get(name) or 0) for r in records)


async def seed(request: web.Request) -> web.Response:
    """POST /fake-admin/books: replace the named providers' books (test control, not a provider API)."""
    books = request.app[BOOKS_KEY]
    body = orjson.loads(await request.read())
    for provider in ("openai", "anthropic"):
        if provider in body:
            spec = body[provider]
            books.providers[provider] = ProviderBooks(spec.get("admin_key") or DEFAULT_KEYS[provider],
                                                      list(spec.get("usage") or ()), list(spec.get("costs") or ()),
                                                      list(spec.get("embeddings") or ()))
    for provider, n in (body.get("rate_limit") or {}).items():
        books.of(provider).rate_limited = int(n)
    return json_response({"ok": True})


async def clear(request: web.Request) -> web.Response:
    """DELETE /fake-admin/books: back to empty books with the default admin keys."""
    request.app[BOOKS_KEY].providers.update(Books().providers)
    return json_response({"ok": True})


def setup(app: web.Application) -> None:
    app[BOOKS_KEY] = Books()


CONTROL_ROUTES = (("POST", "/fake-admin/books", seed), ("DELETE", "/fake-admin/books", clear))
