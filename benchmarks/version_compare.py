"""The gateway at two git revisions: CPU per request at saturation, alternated in one run.

    python -m benchmarks.version_compare --base 88b0fe8 [--reps 5] [--seconds 8] [--connections 64]

The question "did this change cost the hot path anything?" cannot be answered by comparing with a
number measured on another day: the box is shared and its speed drifts. So both revisions run in
the same session, on the same Kafka and fake upstream (core 1), each gateway on core 0, with keys
on and metering to Kafka, and the order alternates every repetition. The base revision runs from a
`git worktree` (put first on PYTHONPATH, with this venv's packages); the head is this checkout.
CPU per request (the gateway's /proc utime+stime over the requests wrk completed) is the metric,
reported per repetition and as the median, with the ratio head / base of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aimeter.kafka_admin import ensure_topics
from aimeter.local.kafka import LocalKafka, free_port
from benchmarks import phases, suts
from benchmarks.procs import AUX_CORE, SUT_CORE, Procs, wait_http

REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"version-compare {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def start(procs: Procs, name: str, env: dict[str, str], key: str, pythonpath: Path | None) -> suts.Target:
    port = free_port()
    child = {**env, "AIMETER_GATEWAY_PORT": str(port), "AIMETER_AUTH": "keys", "AIMETER_GATEWAY_ID": f"gw-{name}"}
    if pythonpath is not None:
        child["PYTHONPATH"] = str(pythonpath)
    proc = procs.spawn(f"gateway-{name}", [sys.executable, "-m", "aimeter", "gateway"], SUT_CORE, env=child)
    wait_http(proc, f"http://127.0.0.1:{port}/health")
    return suts.Target(name, f"http://127.0.0.1:{port}{suts.CHAT_PATH}", {"Authorization": f"Bearer {key}"}, proc)


def compare(work: Path, base: Path, reps: int, seconds: float, connections: int) -> list[dict[str, Any]]:
    procs = Procs(work / "logs")
    kafka = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port(),
                       cache_dir=REPO / ".aimeter" / "cache" / "kafka", progress=log)
    try:
        bootstrap = kafka.start()
        ensure_topics(bootstrap)
        _, upstream_port = suts.start_upstream(procs)
        env = suts.aimeter_env(work, bootstrap, suts.write_gateway_config(work, upstream_port))
        key = suts.create_key(env, "bench")
        targets = {"base": start(procs, "base", env, key, base / "services"),
                   "head": start(procs, "head", env, key, None)}
        payload = phases.body(0)
        for name, target in targets.items():  # warm-up: upstream pool, caches, gc thresholds
            phases.saturation(target, payload, connections=connections, seconds=3, scratch=work)
            log(f"warmed up {name}")
        runs = []
        for rep in range(reps):
            for name in ("base", "head") if rep % 2 == 0 else ("head", "base"):
                events = suts.emitted_events(targets[name], work)
                result = phases.saturation(targets[name], payload, connections=connections, seconds=seconds,
                                           scratch=work)
                result["events"] = suts.emitted_events(targets[name], work) - events
                runs.append({"rep": rep, "revision": name, **result})
                log(f"rep {rep} {name}: {result['rps']:.0f} rps, {result['cpu_us_per_request']} us CPU/request, "
                    f"errors {result['errors']}, requests {result['requests']}, events {result['events']}")
        return runs
    finally:
        procs.stop_all()
        kafka.stop()


def summary(runs: list[dict[str, Any]], base_rev: str) -> str:
    lines = ["revision          CPU us/request (each rep)              median    RPS median"]
    medians = {}
    for name in ("base", "head"):
        mine = [r for r in runs if r["revision"] == name]
        cpu = [r["cpu_us_per_request"] for r in mine]
        medians[name] = statistics.median(cpu)
        label = f"{name} ({base_rev})" if name == "base" else "head (this tree)"
        lines.append(f"{label:17} {' '.join(f'{c:7.1f}' for c in cpu):38} {medians[name]:7.1f}   "
                     f"{statistics.median(r['rps'] for r in mine):9.0f}")
    lines.append(f"head / base CPU per request: {medians['head'] / medians['base']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.version_compare", description=__doc__)
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. a commit id)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also write the runs as JSON here")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {AUX_CORE})  # this harness and everything it starts, except the gateways
    work = Path(tempfile.mkdtemp(prefix="aimeter-version-compare-"))
    base = work / "base-tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True,
                   capture_output=True)
    try:
        runs = compare(work, base, args.reps, args.seconds, args.connections)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1), encoding="utf-8")
    print(summary(runs, args.base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
