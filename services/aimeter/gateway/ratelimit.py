"""Requests and tokens per minute, per scope (a gateway key, a team): an exact sliding-window log. Pure: the
caller passes ``now`` (integer nanoseconds of a monotonic clock), nothing here reads a clock. Integers, because
with float seconds ``(t + 60) - 60`` need not equal ``t``, and a request could be admitted into a full window.

Why a sliding log rather than a token bucket (GCRA): a bucket of capacity N refilled at N per minute admits up
to 2N requests in some 60-second window (a full bucket, then a minute of refill), so "600 requests per minute"
would not mean what it says. The log admits a request only when fewer than ``rpm`` requests were admitted in the
last 60 s, so no 60-second window ever holds more than ``rpm`` (tests/unit/test_ratelimit.py proves it with
Hypothesis). Its costs: one entry per admitted request per scope, at most ``rpm`` of them (at most ``tpm`` when
only tokens are limited, as every request reserves at least one token); admission is amortised O(1) (append,
drop what expired); only a refusal walks the log, to say when the request would fit.

Tokens are not known until the answer is done, so a request *reserves* an estimate when admitted (its prompt
plus the most it may generate) and the reservation is *settled* to the real count when its usage event is
emitted. A settle that lowers the count frees capacity at once; one that raises it (an estimate that was short)
is charged to the window, and later requests wait for it. With reservations never below the real count, no
60-second window holds more than ``tpm`` tokens.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

WINDOW_NS = 60 * 10**9  # "per minute"
NEVER = math.inf  # wait_s of a request larger than the whole limit: it never fits


@dataclass(frozen=True, slots=True)
class Limit:
    """A scope's limits; 0 on an axis means that axis is not limited."""

    rpm: int = 0
    tpm: int = 0

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm)


class _Entry:
    """One admitted request in one scope's log: when, and the tokens it holds (reserved, then settled)."""

    __slots__ = ("at", "live", "tokens")

    def __init__(self, at: int, tokens: int) -> None:
        self.at, self.tokens, self.live = at, tokens, True


class Window:
    """One scope's log of the requests admitted in the last minute, oldest first, and their tokens.

    An entry admitted at ``t`` counts at every moment in ``[t, t + WINDOW_NS)``."""

    __slots__ = ("entries", "tokens")

    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.tokens = 0

    def prune(self, now: int) -> None:
        entries, cutoff = self.entries, now - WINDOW_NS
        while entries and entries[0].at <= cutoff:
            gone = entries.popleft()
            self.tokens -= gone.tokens
            gone.live = False

    def wait(self, limit: Limit, tokens: int, now: int) -> int | None:
        """Nanoseconds until one more request reserving ``tokens`` fits (0: it fits now; None: it never will).
        Call after ``prune(now)``: every entry then expires after ``now``, so a wait is never 0 when it is full."""
        entries, wait = self.entries, 0
        if limit.rpm and len(entries) >= limit.rpm:
            # The request fits once all but rpm - 1 of the entries expired: the (len - rpm)-th oldest is the last.
            wait = entries[len(entries) - limit.rpm].at + WINDOW_NS - now
        if limit.tpm and self.tokens + tokens > limit.tpm:
            if tokens > limit.tpm:
                return None
            excess = self.tokens + tokens - limit.tpm
            for entry in entries:  # only on a refusal
                excess -= entry.tokens
                if excess <= 0:
                    wait = max(wait, entry.at + WINDOW_NS - now)
                    break
        return wait

    def standing(self, limit: Limit, now: int) -> tuple[Standing | None, Standing | None]:
        """(requests, tokens) as the response headers report them; None for an axis that is not limited."""
        reset = (self.entries[-1].at + WINDOW_NS - now) / 1e9 if self.entries else 0.0  # until the log is empty
        requests = Standing(limit.rpm, max(0, limit.rpm - len(self.entries)), reset) if limit.rpm else None
        tokens = Standing(limit.tpm, max(0, limit.tpm - self.tokens), reset) if limit.tpm else None
        return requests, tokens


@dataclass(frozen=True, slots=True)
class Standing:
    """One axis of one scope as clients read it: the limit, what is left of it, and the seconds until the window
    is back to its initial state (everything counted now has expired), as OpenAI's ``x-ratelimit-reset-*``."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(slots=True)
class Decision:
    """What ``RateLimiter.admit`` decided. Admitted: ``held`` are the entries to settle. Refused: ``scope`` and
    ``axis`` name the limit that refused and ``wait_s`` when the request would fit (``NEVER``: too large ever).
    ``requests`` and ``tokens``: the tightest scope per axis, for the response headers."""

    admitted: bool
    requests: Standing | None = None
    tokens: Standing | None = None
    scope: str = ""
    axis: str = ""  # "requests" or "tokens"
    limit: Limit = field(default_factory=Limit)
    wait_s: float = 0.0
    wait_ns: int = 0  # the same wait, exact (-1: never)
    reserved: int = 0
    held: list[tuple[Window, _Entry]] = field(default_factory=list)


def _tighter(best: Standing | None, other: Standing | None) -> Standing | None:
    """The standing that leaves the client less: fewer remaining, then the later reset."""
    if other is None:
        return best
    if best is None or (other.remaining, -other.reset_s) < (best.remaining, -best.reset_s):
        return other
    return best


class RateLimiter:
    """Every scope's window. Single-threaded (the gateway's event loop): an admit is atomic across its scopes."""

    def __init__(self) -> None:
        self.windows: dict[str, Window] = {}

    def admit(self, now: int, scopes: Sequence[tuple[str, Limit]], tokens: int) -> Decision:
        """Admit one request reserving ``tokens`` in every scope, or in none: a request refused by its team's
        limit takes nothing from its key's. ``now`` must not go backwards (a monotonic clock)."""
        tokens = max(1, tokens)  # a request holds at least one token: bounds a tokens-only log by tpm
        windows = []
        for scope, _limit in scopes:
            window = self.windows.get(scope)
            if window is None:
                window = self.windows[scope] = Window()
            window.prune(now)
            windows.append(window)
        for (scope, limit), window in zip(scopes, windows, strict=True):
            wait = window.wait(limit, tokens, now)
            if wait is None or wait > 0:
                axis = "requests" if limit.rpm and len(window.entries) >= limit.rpm else "tokens"
                decision = self._standings(now, scopes, Decision(False))
                decision.scope, decision.axis, decision.limit = scope, axis, limit
                decision.wait_ns = -1 if wait is None else wait
                decision.wait_s = NEVER if wait is None else wait / 1e9
                decision.reserved = tokens
                return decision
        held = []
        for window in windows:
            entry = _Entry(now, tokens)
            window.entries.append(entry)
            window.tokens += tokens
            held.append((window, entry))
        return self._standings(now, scopes, Decision(True, reserved=tokens, held=held))

    def _standings(self, now: int, scopes: Sequence[tuple[str, Limit]], decision: Decision) -> Decision:
        for scope, limit in scopes:
            requests, tokens = self.windows[scope].standing(limit, now)
            decision.requests, decision.tokens = _tighter(decision.requests, requests), _tighter(decision.tokens,
                                                                                                  tokens)
        return decision

    @staticmethod
    def settle(decision: Decision, tokens: int) -> None:
        """Replace the request's reservation by the ``tokens`` it really used, in each window still holding it
        (a request that outlived the window no longer counts there). Call once per admitted request."""
        tokens = max(0, tokens)
        for window, entry in decision.held:
            if entry.live:
                window.tokens += tokens - entry.tokens
                entry.tokens = tokens
        decision.held = []


# --- response headers, in the shapes the SDKs and their users read ---

def go_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format (Go's duration text): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def openai_headers(requests: Standing | None, tokens: Standing | None) -> list[tuple[bytes, bytes]]:
    out = []
    for axis, standing in (("requests", requests), ("tokens", tokens)):
        if standing is not None:
            out += [(f"x-ratelimit-limit-{axis}".encode(), str(standing.limit).encode()),
                    (f"x-ratelimit-remaining-{axis}".encode(), str(standing.remaining).encode()),
                    (f"x-ratelimit-reset-{axis}".encode(), go_duration(standing.reset_s).encode())]
    return out


def rfc3339(moment: datetime) -> str:
    """Anthropic's reset format: an RFC 3339 UTC time, whole seconds (rounded up: never earlier than true)."""
    whole = moment.replace(microsecond=0) + (timedelta(seconds=1) if moment.microsecond else timedelta())
    return whole.strftime("%Y-%m-%dT%H:%M:%SZ")


def anthropic_headers(requests: Standing | None, tokens: Standing | None, wall_now: datetime,
                      ) -> list[tuple[bytes, bytes]]:
    """``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``; ``wall_now`` is a UTC datetime."""
    out = []
    for axis, standing in (("requests", requests), ("tokens", tokens)):
        if standing is not None:
            reset = rfc3339(wall_now + timedelta(seconds=standing.reset_s))
            out += [(f"anthropic-ratelimit-{axis}-limit".encode(), str(standing.limit).encode()),
                    (f"anthropic-ratelimit-{axis}-remaining".encode(), str(standing.remaining).encode()),
                    (f"anthropic-ratelimit-{axis}-reset".encode(), reset.encode())]
    return out


def retry_headers(wait_s: float) -> list[tuple[bytes, bytes]]:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``, which the openai and anthropic SDKs
    read first; nothing for a request that can never fit (waiting would not help)."""
    if wait_s == NEVER:
        return []
    return [(b"retry-after", str(max(1, math.ceil(wait_s))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(wait_s * 1000))).encode())]
