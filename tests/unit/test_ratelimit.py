"""The rate limiter's pure core (gateway/ratelimit.py): the sliding-window log never admits more than the limit
in any 60-second window, refuses only when the window is full, and its retry and header values are consistent
with what it later admits."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimeter.gateway.ratelimit import (
    NEVER,
    WINDOW_NS,
    Limit,
    RateLimiter,
    anthropic_headers,
    go_duration,
    openai_headers,
    retry_headers,
)

S = 10**9
# Gaps between requests in nanoseconds: bursts (0), sub-second, and gaps that land on the window's edge.
gaps = st.one_of(st.just(0), st.integers(0, 2 * S), st.integers(0, 90 * S),
                 st.sampled_from([WINDOW_NS, WINDOW_NS - 1, WINDOW_NS + 1]))


def most_in_any_window(times: list[int], weights: list[int] | None = None) -> int:
    """The largest total admitted in any half-open window [t, t + 60 s): windows starting at an admission are the
    worst case."""
    weights = weights or [1] * len(times)
    best = 0
    for i, start in enumerate(times):
        end = bisect.bisect_left(times, start + WINDOW_NS)
        best = max(best, sum(weights[i:end]))
    return best


@settings(max_examples=300, deadline=None)
@given(rpm=st.integers(1, 12), steps=st.lists(gaps, min_size=1, max_size=120))
def test_never_more_requests_than_rpm_in_any_window_and_refuses_only_when_full(rpm, steps):
    limiter, now, admitted = RateLimiter(), 0, []
    for gap in steps:
        now += gap
        decision = limiter.admit(now, [("key:a", Limit(rpm=rpm))], 0)
        in_window = sum(1 for t in admitted if now - WINDOW_NS < t <= now)
        assert decision.admitted == (in_window < rpm)  # refused exactly when the last 60 s are full
        if decision.admitted:
            admitted.append(now)
            assert decision.requests is not None
            assert decision.requests.remaining == rpm - in_window - 1
    assert most_in_any_window(admitted) <= rpm


@settings(max_examples=300, deadline=None)
@given(tpm=st.integers(1, 5000), steps=st.lists(st.tuples(gaps, st.integers(0, 3000), st.floats(0, 1)),
                                                  min_size=1, max_size=80))
def test_never_more_tokens_than_tpm_in_any_window_when_settles_are_at_most_the_reservation(tpm, steps):
    limiter, now = RateLimiter(), 0
    times, used = [], []
    for gap, reserve, fraction in steps:
        now += gap
        decision = limiter.admit(now, [("team:t", Limit(tpm=tpm))], reserve)
        held = sum(u for t, u in zip(times, used, strict=True) if now - WINDOW_NS < t <= now)
        assert decision.admitted == (held + max(1, reserve) <= tpm)  # refused exactly when it does not fit
        assert decision.tokens is not None
        assert decision.tokens.remaining == max(0, tpm - held - (max(1, reserve) if decision.admitted else 0))
        if decision.admitted:
            actual = int(max(1, reserve) * fraction)  # the real count never exceeds the reservation here
            limiter.settle(decision, actual)
            times.append(now)
            used.append(actual)
        elif max(1, reserve) > tpm:
            assert decision.wait_s == NEVER
    assert most_in_any_window(times, used) <= tpm


@settings(max_examples=200, deadline=None)
@given(rpm=st.integers(1, 6), tpm=st.integers(10, 200), steps=st.lists(st.tuples(gaps, st.integers(0, 60)),
                                                                       min_size=1, max_size=60))
def test_a_refused_request_fits_exactly_after_its_wait(rpm, tpm, steps):
    """retry-after is neither early nor late: refused just before ``wait_s``, admitted at it."""
    limiter, now = RateLimiter(), 0
    for gap, reserve in steps:
        now += gap
        decision = limiter.admit(now, [("key:a", Limit(rpm=rpm, tpm=tpm))], reserve)
        if decision.admitted or decision.wait_s == NEVER:
            continue
        probe_early, probe = RateLimiter(), RateLimiter()
        for copy in (probe_early, probe):  # the same history, replayed into fresh limiters
            for window_scope, window in limiter.windows.items():
                for at, amount in zip(window.times, window.amounts, strict=True):
                    copy.admit(at, [(window_scope, Limit())], amount)
        assert decision.wait_ns > 0
        assert not probe_early.admit(now + decision.wait_ns - 1, [("key:a", Limit(rpm, tpm))], reserve).admitted
        assert probe.admit(now + decision.wait_ns, [("key:a", Limit(rpm, tpm))], reserve).admitted


@settings(max_examples=200, deadline=None)
@given(rpm=st.integers(1, 8), steps=st.lists(gaps, min_size=1, max_size=40))
def test_after_the_reset_the_whole_limit_is_available_again(rpm, steps):
    limiter, now, last = RateLimiter(), 0, None
    for gap in steps:
        now += gap
        decision = limiter.admit(now, [("key:a", Limit(rpm=rpm))], 0)
        last = decision.requests
    assert last is not None
    later = now + round(last.reset_s * S)
    assert all(limiter.admit(later, [("key:a", Limit(rpm=rpm))], 0).admitted for _ in range(rpm))


def test_a_team_refusal_takes_nothing_from_the_key():
    limiter = RateLimiter()
    scopes = [("key:a", Limit(rpm=10)), ("team:t", Limit(rpm=1))]
    assert limiter.admit(0, scopes, 0).admitted
    refused = limiter.admit(S, scopes, 0)
    assert not refused.admitted
    assert refused.scope == "team:t"
    assert refused.axis == "requests"
    assert len(limiter.windows["key:a"].times) == 1
    assert refused.requests is not None
    assert refused.requests.remaining == 0


def test_settle_frees_tokens_at_once_and_a_late_settle_counts_nowhere():
    limiter = RateLimiter()
    first = limiter.admit(0, [("key:a", Limit(tpm=1000))], 900)
    assert not limiter.admit(S, [("key:a", Limit(tpm=1000))], 200).admitted
    limiter.settle(first, 100)
    second = limiter.admit(S, [("key:a", Limit(tpm=1000))], 200)
    assert second.admitted
    assert second.tokens is not None
    assert second.tokens.remaining == 700
    limiter.admit(WINDOW_NS + 2 * S, [("key:a", Limit(tpm=1000))], 1)  # both entries expired and were dropped
    limiter.settle(second, 5000)  # a stream that outlived the window: its window no longer holds it
    assert limiter.windows["key:a"].tokens == 1


def test_an_estimate_that_was_short_is_charged_to_the_window():
    limiter = RateLimiter()
    first = limiter.admit(0, [("key:a", Limit(tpm=1000))], 100)
    limiter.settle(first, 1200)
    refused = limiter.admit(S, [("key:a", Limit(tpm=1000))], 10)
    assert not refused.admitted
    assert refused.wait_ns == WINDOW_NS - S


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.0201, "21ms"), (0.999, "999ms"), (1, "1s"), (1.5, "1.5s"), (59.9994, "1m0s"), (59.9984, "59.999s"),
    (360, "6m0s"), (90.25, "1m30.25s"), (3600, "1h0m0s")])
def test_reset_durations_read_as_openai_writes_them(seconds, text):
    assert go_duration(seconds) == text


def test_header_shapes():
    from aimeter.gateway.ratelimit import Standing  # noqa: PLC0415

    requests, tokens = Standing(600, 599, 59.5), Standing(100000, 95000, 0.25)
    assert dict(openai_headers(requests, tokens)) == {
        b"x-ratelimit-limit-requests": b"600", b"x-ratelimit-remaining-requests": b"599",
        b"x-ratelimit-reset-requests": b"59.5s", b"x-ratelimit-limit-tokens": b"100000",
        b"x-ratelimit-remaining-tokens": b"95000", b"x-ratelimit-reset-tokens": b"250ms"}
    wall = datetime(2026, 12, 6, 23, 59, 30, 100, tzinfo=UTC)
    assert dict(anthropic_headers(requests, None, wall)) == {
        b"anthropic-ratelimit-requests-limit": b"600", b"anthropic-ratelimit-requests-remaining": b"599",
        b"anthropic-ratelimit-requests-reset": b"2026-12-07T00:00:30Z"}  # 23:59:30.0001 + 59.5 s, rounded up
    assert dict(retry_headers(2.2)) == {b"retry-after": b"3", b"retry-after-ms": b"2200"}
    assert retry_headers(NEVER) == [(b"x-should-retry", b"false")]


def test_a_released_admission_counts_nothing():
    """A request admitted, then refused by a budget before it was forwarded, leaves both windows as they were."""
    limiter = RateLimiter()
    scopes = [("key:a", Limit(rpm=2, tpm=100)), ("team:t", Limit(rpm=5))]
    kept = limiter.admit(0, scopes, 30)
    limiter.release(limiter.admit(S, scopes, 40))
    assert [len(w.times) for w in limiter.windows.values()] == [1, 1]
    assert limiter.windows["key:a"].tokens == 30
    assert limiter.admit(2 * S, scopes, 70).admitted  # the released request's room is free again
    limiter.settle(kept, 10)
    assert limiter.windows["key:a"].tokens == 80
