"""The gateway's HTTP server, native vs uvicorn: CPU per request at saturation, alternated in one run.

    python -m benchmarks.server_compare [--reps 3] [--seconds 10] [--connections 64]

Starts a local Kafka and the fake upstream (core 1), then two gateways on core 0 that differ only in
AIMETER_GATEWAY_SERVER, both with keys on and metering to Kafka (no pricer: it would only add noise).
Each repetition runs wrk against both, the order alternating, and records the gateway's CPU time
(/proc utime+stime) per request and its RPS. CPU per request is the metric because the box is
shared: another tenant's load slows both runs' wall clock, far less a process's own CPU per request.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aimeter.kafka_admin import ensure_topics
from aimeter.local.kafka import LocalKafka, free_port
from benchmarks import phases, suts
from benchmarks.procs import AUX_CORE, Procs

REPO = Path(__file__).resolve().parents[1]
SERVERS = ("native", "uvicorn")


def log(message: str) -> None:
    print(f"compare {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def probe(target: suts.Target, payload: bytes) -> str:
    """One request by hand: the load must be real proxied answers, not fast errors."""
    request = urllib.request.Request(target.url, data=payload, headers={**target.headers,
                                                                        "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = resp.read()
        if resp.status != 200 or not resp.headers["x-aimeter-event-id"]:
            raise RuntimeError(f"probe answered {resp.status}: {body[:200]!r}")
        return f"{resp.status}, {len(body)} bytes, event {resp.headers['x-aimeter-event-id']}"


def emitted(target: suts.Target) -> int:
    """The gateway's count of usage events handed to Kafka (one per proxied request)."""
    with urllib.request.urlopen(target.url.split("/v1/")[0] + "/metrics", timeout=10) as resp:
        metrics = dict(line.split() for line in resp.read().decode().splitlines())
    return int(float(metrics["aimeter_events_emitted_total"]))


def compare(work: Path, reps: int, seconds: float, connections: int) -> list[dict[str, Any]]:
    procs = Procs(work / "logs")
    kafka = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port(),
                       cache_dir=REPO / ".aimeter" / "cache" / "kafka", progress=log)
    try:
        bootstrap = kafka.start()
        ensure_topics(bootstrap)
        _, upstream_port = suts.start_upstream(procs)
        env = suts.aimeter_env(work, bootstrap, suts.write_gateway_config(work, upstream_port))
        key = suts.create_key(env, "bench")
        targets = {name: suts.start_gateway(procs, {**env, "AIMETER_GATEWAY_SERVER": name,
                                                    "AIMETER_GATEWAY_ID": f"gw-{name}"}, key)
                   for name in SERVERS}
        payload = phases.body(0)
        for name, target in targets.items():  # warm-up: upstream pool, caches, gc thresholds
            log(f"{name} probe: {probe(target, payload)}")
            phases.saturation(target, payload, connections=connections, seconds=3, scratch=work)
            log(f"warmed up {name}")
        runs = []
        for rep in range(reps):
            order = SERVERS if rep % 2 == 0 else SERVERS[::-1]
            for name in order:
                events = emitted(targets[name])
                result = phases.saturation(targets[name], payload, connections=connections, seconds=seconds,
                                           scratch=work)
                result["events"] = emitted(targets[name]) - events
                runs.append({"rep": rep, "server": name, **result})
                log(f"rep {rep} {name}: {result['rps']:.0f} rps, {result['cpu_us_per_request']} us CPU/request, "
                    f"{result['cpu_cores']} cores, errors {result['errors']}, p99 {result['p99_ms']} ms, "
                    f"requests {result['requests']}, events emitted {result['events']}")
        return runs
    finally:
        procs.stop_all()
        kafka.stop()


def summary(runs: list[dict[str, Any]]) -> str:
    lines = ["server   CPU us/request (each rep)        median   RPS (each rep)               median"]
    for name in SERVERS:
        mine = [r for r in runs if r["server"] == name]
        cpu = [r["cpu_us_per_request"] for r in mine]
        rps = [r["rps"] for r in mine]
        lines.append(f"{name:8} {' '.join(f'{c:7.1f}' for c in cpu):32} {statistics.median(cpu):7.1f}   "
                     f"{' '.join(f'{x:7.0f}' for x in rps):28} {statistics.median(rps):7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server_compare", description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also write the runs as JSON here")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {AUX_CORE})  # this harness and everything it starts, except the gateways
    work = Path(tempfile.mkdtemp(prefix="aimeter-server-compare-"))
    try:
        runs = compare(work, args.reps, args.seconds, args.connections)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1), encoding="utf-8")
    print(summary(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
