"""One benchmark session: start everything once, then run every measurement against the same upstream.

Order inside a repetition keeps comparisons fair on a shared, noisy box: for each upstream
latency, all targets run saturation back to back, then each fixed rate back to back (direct
first), then streams. Ratios are taken between runs of the same repetition only.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimeter.kafka_admin import ensure_topics
from aimeter.local.kafka import LocalKafka, free_port
from benchmarks import phases, pipeline, suts
from benchmarks.plan import Plan
from benchmarks.procs import (
    AUX_CORE,
    Proc,
    Procs,
    cpu_available,
    cpu_seconds,
    peak_rss_mb,
    wait_http,
    wait_quiet,
)

REPO = Path(__file__).resolve().parents[1]
CATCH_UP_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 120.0


def settle(pids: list[int], timeout: float, idle_cores: float = 0.05) -> float:
    """Wait until these processes are idle (an overloaded proxy keeps serving its queue after the load stops)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < idle_cores * 0.5:
            break
    return round(time.monotonic() - start, 1)


def log(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@dataclass
class Session:
    plan: Plan
    work: Path
    procs: Procs
    skip: set[str]
    bootstrap: str = ""
    upstream_port: int = 0
    kafka: LocalKafka | None = None
    env: dict[str, str] = field(default_factory=dict)
    targets: list[suts.Target] = field(default_factory=list)
    pricer: Proc | None = None
    pricer_group: str = ""
    query_port: int = 0
    fresh_key: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    patience: float = 0.0  # seconds left for waiting on other tenants, over the whole session
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.patience = self.plan.patience_s

    def start_kafka(self, bootstrap: str | None) -> None:
        if bootstrap:
            self.bootstrap = bootstrap
        else:
            self.kafka = LocalKafka(self.work / "kafka", port=free_port(), controller_port=free_port(),
                                    cache_dir=REPO / ".aimeter" / "cache" / "kafka", progress=log)
            self.bootstrap = self.kafka.start()  # inherits this process's affinity: the aux core
        ensure_topics(self.bootstrap)
        log(f"Kafka at {self.bootstrap}")

    def start_upstream(self) -> None:
        upstream, self.upstream_port = suts.start_upstream(self.procs)
        self.targets.append(suts.direct(upstream, self.upstream_port))
        config = suts.write_gateway_config(self.work, self.upstream_port)
        self.query_port = free_port()
        self.pricer_group = f"bench-main-{uuid.uuid4().hex[:8]}"
        self.env = suts.aimeter_env(self.work, self.bootstrap, config, query_port=str(self.query_port),
                                    pricer_group=self.pricer_group)

    def measure_pricer(self) -> None:
        """Pricer ingest rate, before any proxy runs, with the SUT core to itself."""
        took = pipeline.preload(self.bootstrap, self.plan.preload_events)
        expected = pipeline.topic_size(self.bootstrap)
        log(f"preloaded {self.plan.preload_events} events in {took:.1f} s; topic holds {expected}")
        for rep in range(self.plan.reps):
            result = self._measured(lambda: pipeline.pricer_rate(self.procs, self.env, self.work, expected,
                                                                 self.plan.pricer_timeout_s))
            log(f"pricer rep {rep}: {result['events_per_s']:.0f} events/s ({result['ingested']}/{expected})")
            self.runs.append({"phase": "pricer", "rep": rep, "target": "pricer", **result})

    def start_proxies(self) -> None:
        pipeline.commit_to_end(self.bootstrap, self.pricer_group)
        # The pricer shares the aux core with the load generator and the fake upstream. Its batch inserts
        # come in bursts of tens of ms, and at normal priority they delayed the very answers being timed
        # (gateway p99 at 1,000 RPS: 5-11 ms with it running, 1.9-2.8 ms with it paused, same session).
        # Under SCHED_IDLE it uses only the time they leave; it still keeps up at fixed rates, lags during
        # saturation, and _after() waits for it to catch up before the next run. Its own rate is measured
        # separately (measure_pricer), alone on a core.
        self.pricer = self.procs.spawn("pricer", [sys.executable, "-m", "aimeter", "pricer"], AUX_CORE, env=self.env,
                                       idle=True)
        wait_http(self.pricer, f"http://127.0.0.1:{self.query_port}/ping", timeout=120)
        key = suts.create_key(self.env, "bench")
        self.fresh_key = suts.create_key(self.env, pipeline.FRESH_TEAM)
        self.targets.append(suts.start_gateway(self.procs, self.env, key))
        for name, start in (("nginx", suts.start_nginx), ("litellm", suts.start_litellm)):
            if name in self.skip:
                self.skipped[name] = "skipped on the command line"
                continue
            target = start(self.procs, self.work, self.upstream_port)
            if target is None:
                self.skipped[name] = f"{name} is not installed (benchmarks/run.sh installs it)"
            else:
                self.targets.insert(1 if name == "nginx" else len(self.targets), target)
        log("targets up: " + ", ".join(t.name for t in self.targets))

    def run_reps(self) -> None:
        for rep in range(self.plan.reps):
            free = {"core0": cpu_available(0), "core1": cpu_available(1)}
            self.runs.append({"phase": "cpu_available", "rep": rep, **free})
            log(f"rep {rep}: CPU share a busy loop got: {free}")
            for latency in self.plan.latencies_ms:
                self._saturation(rep, latency)
                for rate in self.plan.rates:
                    self._fixed_rate(rep, latency, rate)
                self._streams(rep, latency)

    def _measured(self, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Start in a lull; redo a run that other tenants disturbed, keeping the least disturbed attempt.

        Waiting is bounded per gate (quiet_wait_s) and in total (patience_s), so a busy box makes the
        session longer, never endless; every result records its attempts and the load it ran under.
        """
        best: dict[str, Any] | None = None
        for attempt in range(1, self.plan.max_attempts + 1):
            if self.plan.quiet_wait_s and self.patience > 0:
                waited, _ = wait_quiet(min(self.plan.quiet_wait_s, self.patience))
                self.patience -= waited
            result = run()
            result["attempts"] = attempt
            if best is None or result.get("background_cores", 0) < best.get("background_cores", 0):
                best = result
            if best.get("background_cores", 0) <= self.plan.disturbed_cores or self.patience <= 0:
                break
            log(f"  other tenants used {result['background_cores']:.2f} cores meanwhile: measuring again")
        assert best is not None
        return best

    def _record(self, phase: str, rep: int, latency: int, target: suts.Target, result: dict[str, Any]) -> None:
        self.runs.append({"phase": phase, "rep": rep, "upstream_ms": latency, "target": target.name, **result})

    def _after(self, target: suts.Target) -> dict[str, float]:
        """Leftover work (LiteLLM's queue, the pricer's catch-up) must not run during the next run."""
        done = {"settle_s": settle(target.pids(), SETTLE_TIMEOUT_S)}
        if target.name == "gateway":
            done["pricer_catch_up_s"] = pipeline.wait_caught_up(self.bootstrap, self.pricer_group, CATCH_UP_TIMEOUT_S)
        return done

    def _saturation(self, rep: int, latency: int) -> None:
        payload = phases.body(latency)
        conns = self.plan.connections_for(latency)
        for target in self.targets:
            def run(target: suts.Target = target) -> dict[str, Any]:
                if self.plan.warmup_s:
                    phases.saturation(target, payload, connections=conns, seconds=self.plan.warmup_s,
                                      scratch=self.work)
                result = phases.saturation(target, payload, connections=conns, seconds=self.plan.saturation_s,
                                           scratch=self.work)
                return {**result, **self._after(target)}

            result = self._measured(run)
            log(f"rep {rep} {latency} ms saturation {target.name}: {result['rps']:.0f} RPS on "
                f"{result['cpu_cores']:.2f} cores, {result['errors']} errors (others: {result['background_cores']})")
            self._record("saturation", rep, latency, target, result)

    def _saturated_at(self, rep: int, latency: int, target: str) -> float:
        return next(r["rps"] for r in self.runs if r["phase"] == "saturation" and r["rep"] == rep
                    and r["upstream_ms"] == latency and r["target"] == target)

    def _fixed_rate(self, rep: int, latency: int, rate: int) -> None:
        payload = phases.body(latency)
        for target in self.targets:
            ceiling = self._saturated_at(rep, latency, target.name)
            if ceiling < 0.5 * rate:  # far past saturation an open loop only measures its own queue
                self._record("rate", rep, latency, target,
                             {"rate": rate, "skipped": f"rate is over twice saturation ({ceiling:.0f} RPS)"})
                continue

            def run(target: suts.Target = target, ceiling: float = ceiling) -> dict[str, Any]:
                result = phases.fixed_rate(target, payload, rate=rate, seconds=self.plan.rate_s, scratch=self.work,
                                           use_vegeta=self.plan.use_vegeta)
                return {**result, "over_saturation": ceiling < rate, **self._after(target)}

            result = self._measured(run)
            log(f"rep {rep} {latency} ms @{rate} {target.name}: p50 {result['p50_ms']:.2f} ms "
                f"p99 {result['p99_ms']:.2f} ms, {result['errors']} errors (others: {result['background_cores']})")
            self._record("rate", rep, latency, target, result)

    def _streams(self, rep: int, latency: int) -> None:
        payload = phases.body(latency, stream=True, gap_ms=self.plan.stream_gap_ms)
        for target in self.targets:
            def run(target: suts.Target = target) -> dict[str, Any]:
                result = phases.streams(target, payload, count=self.plan.stream_count,
                                        concurrency=self.plan.stream_concurrency,
                                        deadline_s=self.plan.stream_deadline_s)
                return {**result, **self._after(target)}

            result = self._measured(run)
            log(f"rep {rep} {latency} ms streams {target.name}: TTFC p50 {result['ttfc_p50_ms']:.2f} ms "
                f"p99 {result['ttfc_p99_ms']:.2f} ms, {result['errors']} errors (others: {result['background_cores']})")
            self._record("stream", rep, latency, target, result)

    def measure_freshness(self) -> None:
        gateway = next(t for t in self.targets if t.name == "gateway")
        headers = {"Authorization": f"Bearer {self.fresh_key}"}
        for rep in range(self.plan.reps):
            result = pipeline.freshness(gateway.url, headers, phases.body(0), (self.query_port, self.work),
                                        self.plan.fresh_count, self.plan.fresh_rate)
            log(f"freshness rep {rep}: p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms")
            self.runs.append({"phase": "freshness", "rep": rep, "target": "gateway", **result})

    def peak_rss(self) -> dict[str, float]:
        rss = {t.name if t.name != "direct" else "fake-upstream": peak_rss_mb(t.pids()) for t in self.targets}
        if self.pricer is not None:
            rss["pricer"] = peak_rss_mb(self.pricer.pids())
        return rss

    def stop(self) -> None:
        self.procs.stop_all()
        if self.kafka is not None:
            self.kafka.stop()
