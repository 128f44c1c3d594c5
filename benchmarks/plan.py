"""How much of everything a run does: the full benchmark, and the smoke run CI uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """Sizes of one session; every load loop is bounded by these counts and durations."""

    name: str
    reps: int
    latencies_ms: tuple[int, ...]
    rates: tuple[int, ...]
    warmup_s: float  # wrk takes whole seconds; 0 skips the warm-up
    saturation_s: float
    connections: tuple[tuple[int, int], ...]  # (upstream latency ms, connections) for saturation
    rate_s: float
    stream_count: int
    stream_concurrency: int
    stream_gap_ms: int
    stream_deadline_s: float
    preload_events: int
    pricer_timeout_s: float
    fresh_count: int
    fresh_rate: float
    use_vegeta: bool
    quiet_wait_s: float  # before each run, wait up to this long for other tenants to go quiet (0: never wait)
    patience_s: float  # total waiting for other tenants allowed in one session
    disturbed_cores: float  # a run during which other tenants used more than this is measured again...
    max_attempts: int  # ...up to this many times in all

    def connections_for(self, latency_ms: int) -> int:
        return dict(self.connections)[latency_ms]


FULL = Plan(
    name="full", reps=3, latencies_ms=(0, 50), rates=(200, 1000), warmup_s=1.0, saturation_s=8.0,
    # With 50 ms upstream latency, 5,000 RPS needs 250 requests in flight: 400 connections leave headroom.
    connections=((0, 64), (50, 400)), rate_s=8.0,
    stream_count=80, stream_concurrency=4, stream_gap_ms=2, stream_deadline_s=60.0,
    preload_events=200_000, pricer_timeout_s=180.0, fresh_count=200, fresh_rate=20.0, use_vegeta=True,
    quiet_wait_s=60.0, patience_s=1500.0, disturbed_cores=0.5, max_attempts=3,
)

SMOKE = Plan(
    name="smoke", reps=1, latencies_ms=(0,), rates=(200,), warmup_s=0.0, saturation_s=1.0,
    connections=((0, 16),), rate_s=0.5,
    stream_count=4, stream_concurrency=2, stream_gap_ms=0, stream_deadline_s=10.0,
    preload_events=300, pricer_timeout_s=60.0, fresh_count=5, fresh_rate=10.0, use_vegeta=False,
    quiet_wait_s=0.0, patience_s=0.0, disturbed_cores=2.0, max_attempts=1,
)
