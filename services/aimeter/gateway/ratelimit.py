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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

WINDOW_NS = 60 * 10**9  # "per minute"
NEVER = math.inf  # wait_s of a request larger than the whole limit: it never fits


@dataclass(frozen=True, slots=True)
class Limit:
    """A scope's limits; 0 on an axis means that axis is not limited."""

    rpm: int = 0
    tpm: int = 0

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm)


_NO_LIMIT = Limit()


class Window:
    """One scope's log of the requests admitted in the last minute, oldest first: when each was admitted, and the
    tokens it holds (reserved, then settled). An entry admitted at ``t`` counts at every moment in
    ``[t, t + WINDOW_NS)``.

    Two deques of integers rather than one object per entry: a busy key's window holds a minute of requests (tens
    of thousands), and integers are not tracked by the garbage collector, which would otherwise walk them all on
    every full collection (~8 ms per 72,000 entries measured here). An entry is named by its sequence number:
    ``popped`` entries have expired so far, so entry ``seq`` sits at index ``seq - popped`` while it is held."""

    __slots__ = ("amounts", "popped", "times", "tokens")

    def __init__(self) -> None:
        self.times: deque[int] = deque()
        self.amounts: deque[int] = deque()
        self.tokens = 0
        self.popped = 0

    def prune(self, now: int) -> None:
        times, cutoff = self.times, now - WINDOW_NS
        while times and times[0] <= cutoff:
            times.popleft()
            self.tokens -= self.amounts.popleft()
            self.popped += 1

    def settle(self, seq: int, tokens: int) -> None:
        """Entry ``seq`` now holds ``tokens``, if it has not expired. A settle follows its admit closely, so the
        entry is near the deque's right end, where indexing starts."""
        index = seq - self.popped
        if index >= 0:
            self.tokens += tokens - self.amounts[index]
            self.amounts[index] = tokens

    def release(self, seq: int) -> None:
        """Forget entry ``seq`` entirely when it is the newest (a request refused right after its admission, before
        any upstream call); otherwise it can only hold no tokens."""
        if seq == self.popped + len(self.times) - 1:
            self.times.pop()
            self.tokens -= self.amounts.pop()
        else:
            self.settle(seq, 0)

    def wait(self, limit: Limit, tokens: int, now: int) -> int | None:
        """Nanoseconds until one more request reserving ``tokens`` fits (0: it fits now; None: it never will).
        Call after ``prune(now)``: every entry then expires after ``now``, so a wait is never 0 when it is full."""
        times, wait = self.times, 0
        if limit.rpm and len(times) >= limit.rpm:
            # The request fits once all but rpm - 1 of the entries expired: the (len - rpm)-th oldest is the last.
            wait = times[len(times) - limit.rpm] + WINDOW_NS - now
        if limit.tpm and self.tokens + tokens > limit.tpm:
            if tokens > limit.tpm:
                return None
            excess = self.tokens + tokens - limit.tpm
            for at, amount in zip(times, self.amounts, strict=True):  # only on a refusal
                excess -= amount
                if excess <= 0:
                    wait = max(wait, at + WINDOW_NS - now)
                    break
        return wait


class Standing(NamedTuple):  # a tuple: built for every limited request, ~3x cheaper than a frozen dataclass
    """One axis of one scope as clients read it: the limit, what is left of it, and the seconds until the window
    is back to its initial state (everything counted now has expired), as OpenAI's ``x-ratelimit-reset-*``."""

    limit: int
    remaining: int
    reset_s: float


class Decision:
    """What ``RateLimiter.admit`` decided. Admitted: ``held`` are the reservation's (window, entry) to settle.
    Refused: ``scope`` and ``axis`` name the limit that refused and ``wait_s`` when the request would fit
    (``NEVER``: too large ever). ``requests`` and ``tokens``: the tightest scope per axis, for the headers."""

    __slots__ = ("admitted", "axis", "held", "limit", "requests", "reserved", "scope", "tokens", "wait_ns",
                 "wait_s")

    def __init__(self, admitted: bool, reserved: int, held: list[tuple[Window, int]] | None = None) -> None:
        self.admitted, self.reserved, self.held = admitted, reserved, held
        self.requests: Standing | None = None
        self.tokens: Standing | None = None
        self.scope, self.axis, self.limit = "", "", _NO_LIMIT  # axis: "requests" or "tokens"
        self.wait_s, self.wait_ns = 0.0, 0  # wait_ns: the same wait, exact (-1: never)


class RateLimiter:
    """Every scope's window. Single-threaded (the gateway's event loop): an admit is atomic across its scopes."""

    def __init__(self) -> None:
        self.windows: dict[str, Window] = {}

    def admit(self, now: int, scopes: Sequence[tuple[str, Limit]], tokens: int) -> Decision:
        """Admit one request reserving ``tokens`` in every scope, or in none: a request refused by its team's
        limit takes nothing from its key's. ``now`` must not go backwards (a monotonic clock)."""
        tokens = max(1, tokens)  # a request holds at least one token: bounds a tokens-only log by tpm
        windows = []
        full = False
        for scope, limit in scopes:
            window = self.windows.get(scope)
            if window is None:
                window = self.windows[scope] = Window()
            window.prune(now)
            windows.append(window)
            if (limit.rpm and len(window.times) >= limit.rpm) or (limit.tpm and window.tokens + tokens > limit.tpm):
                full = True
        if full:
            return self._refuse(now, scopes, windows, tokens)
        held = []
        for window in windows:  # Window.push, inlined: this runs for every limited request
            window.times.append(now)
            window.amounts.append(tokens)
            window.tokens += tokens
            held.append((window, window.popped + len(window.times) - 1))
        return self._standings(now, scopes, windows, Decision(True, tokens, held))

    def _refuse(self, now: int, scopes: Sequence[tuple[str, Limit]], windows: list[Window], tokens: int) -> Decision:
        decision = Decision(False, tokens)
        for (scope, limit), window in zip(scopes, windows, strict=True):
            wait = window.wait(limit, tokens, now)
            if wait is None or wait > 0:
                decision.axis = "requests" if limit.rpm and len(window.times) >= limit.rpm else "tokens"
                decision.scope, decision.limit = scope, limit
                decision.wait_ns = -1 if wait is None else wait
                decision.wait_s = NEVER if wait is None else wait / 1e9
                break
        return self._standings(now, scopes, [], decision)

    def _standings(self, now: int, scopes: Sequence[tuple[str, Limit]], windows: list[Window],
                   decision: Decision) -> Decision:
        """Per axis, the scope that leaves the client least (fewest remaining, then the latest reset). Plain
        comparisons, no max() or tuple compares: this runs for every limited request."""
        best_r = best_t = None
        left_r = left_t = reset_r = reset_t = 0
        for i, (scope, limit) in enumerate(scopes):
            window = windows[i] if windows else self.windows[scope]
            times = window.times
            reset = times[-1] + WINDOW_NS - now if times else 0  # until the log is empty again
            if limit.rpm:
                left = limit.rpm - len(times)
                left = left if left > 0 else 0
                if best_r is None or left < left_r or (left == left_r and reset > reset_r):
                    best_r, left_r, reset_r = limit.rpm, left, reset
            if limit.tpm:
                left = limit.tpm - window.tokens
                left = left if left > 0 else 0
                if best_t is None or left < left_t or (left == left_t and reset > reset_t):
                    best_t, left_t, reset_t = limit.tpm, left, reset
        if best_r is not None:
            decision.requests = Standing(best_r, left_r, reset_r / 1e9)
        if best_t is not None:
            decision.tokens = Standing(best_t, left_t, reset_t / 1e9)
        return decision

    @staticmethod
    def settle(decision: Decision, tokens: int) -> None:
        """Replace the request's reservation by the ``tokens`` it really used, in each window still holding it
        (a request that outlived the window no longer counts there). Call once per admitted request."""
        held = decision.held
        if held:
            tokens = max(0, tokens)
            for window, seq in held:
                window.settle(seq, tokens)
            decision.held = None

    @staticmethod
    def release(decision: Decision) -> None:
        """Undo an admission whose request was then refused by something else (a budget) before it was forwarded:
        it counts neither a request nor tokens. Call right after ``admit``, before any other admission."""
        held = decision.held
        if held:
            for window, seq in held:
                window.release(seq)
            decision.held = None


# --- response headers, in the shapes the SDKs and their users read ---

def go_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format (Go's duration text): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    ms = math.ceil(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms" if ms > 0 else "0s"
    minutes, ms = divmod(ms, 60_000)
    whole, frac = divmod(ms, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s" if frac else f"{whole}s"
    if not minutes:
        return secs
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}" if hours else f"{minutes}m{secs}"


_LIMIT_R, _REMAINING_R, _RESET_R = b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests", \
    b"x-ratelimit-reset-requests"
_LIMIT_T, _REMAINING_T, _RESET_T = b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", \
    b"x-ratelimit-reset-tokens"


def openai_headers(requests: Standing | None, tokens: Standing | None) -> list[tuple[bytes, bytes]]:
    out = []
    reset = b""
    if requests is not None:
        reset = go_duration(requests.reset_s).encode()
        out += [(_LIMIT_R, b"%d" % requests.limit), (_REMAINING_R, b"%d" % requests.remaining), (_RESET_R, reset)]
    if tokens is not None:
        if requests is None or tokens.reset_s != requests.reset_s:  # usually one scope: the same reset
            reset = go_duration(tokens.reset_s).encode()
        out += [(_LIMIT_T, b"%d" % tokens.limit), (_REMAINING_T, b"%d" % tokens.remaining), (_RESET_T, reset)]
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
    read first. A request that can never fit gets ``x-should-retry: false``, which both SDKs obey: retrying it
    would only be refused again."""
    if wait_s == NEVER:
        return [(b"x-should-retry", b"false")]
    return [(b"retry-after", str(max(1, math.ceil(wait_s))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(wait_s * 1000))).encode())]
