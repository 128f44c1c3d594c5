"""One row of a provider's books or of the ledger, in the ledger's token semantics (OTel: ``input_tokens`` is
every prompt token, cached or not; cache reads and writes are subsets of it)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

BUCKETS = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
ALL = "*"  # the scope or model of a row that covers every scope or model (the provider does not split it)
# Anthropic cost lines with no model (web search, code execution, sessions): not a password, a row label.
NON_TOKEN = "(non-token charges)"  # noqa: S105
TOKEN_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


@dataclass(frozen=True)
class Key:
    """Where a figure belongs: the bucket it started in, the model, and the provider project or workspace."""

    bucket_start: datetime
    model: str
    scope: str


@dataclass(frozen=True)
class Figures:
    """Tokens by class, requests (None when the source does not count them) and USD (None when it has no price)."""

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    requests: int | None = None
    usd: Decimal | None = None
    unread_requests: int = 0  # ledger only: answered requests whose usage the gateway could not read
    unpriced_requests: int = 0  # ledger only: requests with no price (cost NULL)

    def __add__(self, other: Figures) -> Figures:
        return Figures(*(self._sum(getattr(self, f), getattr(other, f)) for f in _FIELDS))

    @staticmethod
    def _sum(a: Any, b: Any) -> Any:  # one field of each: int, int | None or Decimal | None
        if a is None:
            return b
        return a if b is None else a + b

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def without_usd(self) -> Figures:
        return replace(self, usd=None)


_FIELDS = tuple(Figures.__dataclass_fields__)


@dataclass
class Book:
    """Figures per key, added up as rows arrive (a page may repeat a key once grouped rows are merged)."""

    rows: dict[Key, Figures] = field(default_factory=dict)

    def add(self, key: Key, figures: Figures) -> None:
        self.rows[key] = self.rows[key] + figures if key in self.rows else figures


def floor_bucket(moment: datetime, width: str) -> datetime:
    """The UTC start of the bucket holding ``moment`` (providers snap buckets to the minute/hour/day in UTC)."""
    moment = moment.astimezone(UTC)
    if width == "1d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_bucket(moment: datetime, width: str) -> datetime:
    start = floor_bucket(moment, width)
    return start if start == moment.astimezone(UTC) else start + BUCKETS[width]


def day_of(key: Key, model: str | None = None, scope: str | None = None) -> Key:
    """``key`` rolled up to its UTC day (cost reports are daily), optionally with model or scope replaced."""
    return Key(floor_bucket(key.bucket_start, "1d"), key.model if model is None else model,
               key.scope if scope is None else scope)
