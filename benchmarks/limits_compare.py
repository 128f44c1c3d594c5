"""The gateway with and without rate limits and budgets: CPU per request at saturation, alternated in one run.

    python -m benchmarks.limits_compare [--variants plain,control,ratelimits,budgets,both] [--reps 5] [--seconds 8]

Like ``version_compare`` (same session, same Kafka and fake upstream on core 1, each gateway on core 0, keys on,
metering to Kafka, the order rotating every repetition), but every gateway runs this tree and only the config
differs: ``plain`` has no limits (``control`` too: a second identical gateway, the run's own noise floor);
``ratelimits`` limits the benchmark's key and its team on requests and tokens
per minute (set high, so every request is admitted and the windows hold a minute of entries, the steady state
of a busy key); ``budgets`` gives the key's team a hard monthly USD budget (large: nothing is refused, every
request reserves and settles); ``both`` has both. The metric is the gateway's CPU per request (/proc
utime+stime over the requests wrk completed), per repetition and as the median; the difference of the medians
against ``plain`` is the check's cost per request.
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
import urllib.request
from pathlib import Path
from typing import Any

from aimeter.kafka_admin import ensure_topics
from aimeter.local.kafka import LocalKafka, free_port
from benchmarks import phases, suts
from benchmarks.procs import AUX_CORE, Procs
from benchmarks.version_compare import start

REPO = Path(__file__).resolve().parents[1]
TEAM = "bench"
RATE_LIMITS = """rate_limits:
  keys: {{{key_id}: {{rpm: 1000000000, tpm: 1000000000000}}}}
  teams: {{{team}: {{rpm: 1000000000, tpm: 1000000000000}}}}
"""
BUDGETS = """budgets:
  caps:
    - {{name: bench-team, scope: team, value: {team}, usd: "1000000", period: month, enforcement: hard,
       on_kafka_down: fail_open}}
  start_wait_s: 2
"""
# control: a second gateway configured as plain, to see how far two identical gateways differ in one run.
VARIANTS = {"plain": "", "control": "", "ratelimits": RATE_LIMITS, "budgets": BUDGETS, "both": RATE_LIMITS + BUDGETS}


def log(message: str) -> None:
    print(f"limits-compare {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def write_config(work: Path, upstream_port: int, variant: str, key_id: str) -> Path:
    base = suts.write_gateway_config(work, upstream_port).read_text(encoding="utf-8")
    path = work / f"gateway-{variant}.yaml"
    path.write_text(base + VARIANTS[variant].format(key_id=key_id, team=TEAM), encoding="utf-8")
    return path


def probe(target: suts.Target, payload: bytes) -> bool:
    """One request: whether its answer carries the rate-limit headers."""
    request = urllib.request.Request(target.url, data=payload, method="POST",
                                     headers={**target.headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # our own gateway, on loopback
        return resp.headers.get("x-ratelimit-limit-requests") is not None


def compare(work: Path, variants: list[str], reps: int, seconds: float, connections: int) -> list[dict[str, Any]]:
    procs = Procs(work / "logs")
    kafka = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port(),
                       cache_dir=REPO / ".aimeter" / "cache" / "kafka", progress=log)
    try:
        bootstrap = kafka.start()
        ensure_topics(bootstrap)
        _, upstream_port = suts.start_upstream(procs)
        env = suts.aimeter_env(work, bootstrap, suts.write_gateway_config(work, upstream_port))
        key = suts.create_key(env, TEAM)
        key_id = key.split("_")[1]
        targets = {}
        for variant in variants:
            config = write_config(work, upstream_port, variant, key_id)
            targets[variant] = start(procs, variant, {**env, "AIMETER_CONFIG": str(config)}, key, None)
        payload = phases.body(0)
        for name, target in targets.items():  # each variant does what it says, or the comparison means nothing
            limited = probe(target, payload)
            if limited != (name in ("ratelimits", "both")):
                raise SystemExit(f"gateway {name}: x-ratelimit-* headers {'present' if limited else 'absent'}")
        for name, target in targets.items():  # warm-up: upstream pool, caches, gc thresholds
            phases.saturation(target, payload, connections=connections, seconds=3, scratch=work)
            log(f"warmed up {name}")
        runs = []
        for rep in range(reps):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for name in order:
                result = phases.saturation(targets[name], payload, connections=connections, seconds=seconds,
                                           scratch=work)
                runs.append({"rep": rep, "variant": name, **result})
                log(f"rep {rep} {name}: {result['rps']:.0f} rps, {result['cpu_us_per_request']} us CPU/request, "
                    f"errors {result['errors']}, requests {result['requests']}")
        return runs
    finally:
        procs.stop_all()
        kafka.stop()


def summary(runs: list[dict[str, Any]], variants: list[str]) -> str:
    lines = ["variant       CPU us/request (each rep)              median    RPS median   errors"]
    medians = {}
    for name in variants:
        mine = [r for r in runs if r["variant"] == name]
        cpu = [r["cpu_us_per_request"] for r in mine if r["cpu_us_per_request"] is not None]
        medians[name] = statistics.median(cpu) if cpu else float("nan")
        lines.append(f"{name:13} {' '.join(f'{c:7.1f}' for c in cpu):38} {medians[name]:7.1f}   "
                     f"{statistics.median(r['rps'] for r in mine):9.0f}   {sum(r['errors'] for r in mine)}")
    if "plain" in medians:
        plain = {r["rep"]: r["cpu_us_per_request"] for r in runs if r["variant"] == "plain"}
        for name in variants:
            if name != "plain":
                # Paired: each repetition's difference, so a box getting busier during the run cancels out.
                paired = [r["cpu_us_per_request"] - plain[r["rep"]] for r in runs
                          if r["variant"] == name and r["cpu_us_per_request"] is not None and plain.get(r["rep"])]
                lines.append(f"{name} - plain: {medians[name] - medians['plain']:+.1f} us CPU per request "
                             f"({medians[name] / medians['plain']:.3f}x); median of the paired differences "
                             f"{statistics.median(paired) if paired else float('nan'):+.1f} us")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits_compare", description=__doc__)
    parser.add_argument("--variants", default="plain,control,ratelimits,budgets,both",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also write the runs as JSON here")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    os.sched_setaffinity(0, {AUX_CORE})  # this harness and everything it starts, except the gateways
    work = Path(tempfile.mkdtemp(prefix="aimeter-limits-compare-"))
    try:
        runs = compare(work, variants, args.reps, args.seconds, args.connections)
    finally:
        subprocess.run(["pkill", "-P", str(os.getpid())], check=False)  # nothing of ours outlives the run
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(runs, indent=1), encoding="utf-8")
    print(summary(runs, variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
