"""``python -m benchmarks [--smoke] [--out DIR]``: one benchmark session, results written at the end.

``benchmarks/run.sh`` (``make bench``) installs the tools first and calls this; the smoke test
calls it with ``--smoke --out <tmp>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report, summary, suts, tools
from benchmarks.plan import FULL, SMOKE
from benchmarks.procs import AUX_CORE, SUT_CORE, Procs, machine
from benchmarks.session import Session, log

BENCH_DIR = Path(__file__).resolve().parent
TOOLS_VENV = BENCH_DIR / ".venv-tools"
LAYOUT = (f"core {SUT_CORE}: only the system under test (fake upstream for 'direct' stays on core {AUX_CORE}; "
          f"the pricer-rate runs put the pricer here alone); core {AUX_CORE}: load generator, fake upstream, Kafka, "
          "the pricer during proxy runs (under SCHED_IDLE, so it only uses time the load leaves), and this "
          "harness. Pinned with taskset.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run with tiny counts (CI)")
    parser.add_argument("--out", type=Path, help="where results.* and chart.png go (default: benchmarks/results; "
                        "with --smoke a new temp dir, never over the committed results)")
    parser.add_argument("--kafka-bootstrap", help="use this Kafka instead of starting a local broker")
    parser.add_argument("--skip", default="", help="comma list of targets to leave out: nginx,litellm")
    parser.add_argument("--reps", type=int, help="override the plan's repetitions")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and data of the run")
    return parser.parse_args(argv)


def versions() -> dict[str, str]:
    """Tool versions, so a reader can tell what ran; a missing tool is simply absent."""
    found: dict[str, str] = {}
    stamp = tools.TOOLS_BIN.parent / "vegeta.version"  # `go install` binaries carry no version: run.sh notes it
    if tools.find("vegeta") and stamp.is_file():
        found["vegeta"] = stamp.read_text(encoding="utf-8").strip()
    probes = {"nginx": [suts.nginx_binary() or "nginx", "-v"], "wrk": [tools.find("wrk") or "wrk", "-v"],
              "litellm": [str(suts.LITELLM_VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('litellm'))"]}
    for name, argv in probes.items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            continue
        match = re.search(r"\d+\.\d+[\w.+-]*", out.stdout + out.stderr)
        if match:
            found[name] = match.group(0)
    return found


def draw_chart(results_path: Path, png: Path) -> str | None:
    """matplotlib lives in benchmarks/.venv-tools, not in the main venv; returns why no chart, or None."""
    python = TOOLS_VENV / "bin" / "python"
    interpreter = str(python) if python.is_file() else sys.executable
    chart = BENCH_DIR / "chart.py"
    out = subprocess.run([interpreter, str(chart), str(results_path), str(png)],
                         capture_output=True, text=True, timeout=120, check=False)
    return None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["chart failed"])[-1]


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = SMOKE if args.smoke else FULL
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    os.sched_setaffinity(0, {AUX_CORE})  # everything this process starts inherits the aux core
    signal.signal(signal.SIGTERM, _stop)  # so `finally` stops every child and Kafka on a plain kill
    work = Path(tempfile.mkdtemp(prefix="aimeter-bench-"))
    skip = {s for s in args.skip.split(",") if s}
    session = Session(plan, work, Procs(work / "logs"), skip)
    started, wall = datetime.now(UTC), time.monotonic()
    log(f"{plan.name} run, work dir {work}")
    try:
        session.start_kafka(args.kafka_bootstrap)
        session.start_upstream()
        session.measure_pricer()
        session.start_proxies()
        session.run_reps()
        session.measure_freshness()
        rss = session.peak_rss()
    except BaseException:
        log(f"run failed; logs kept in {work / 'logs'}")
        args.keep_workdir = True
        raise
    finally:
        session.stop()
        if not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    names = [t.name for t in session.targets]
    meta = {"command": os.environ.get("BENCH_COMMAND") or shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]),
            "started_at": started.strftime("%Y-%m-%d %H:%M UTC"), "duration_s": round(time.monotonic() - wall, 1),
            "machine": machine(), "layout": LAYOUT, "plan": dataclasses.asdict(plan), "targets": names,
            "skipped": session.skipped, "versions": versions(),
            "waited_for_other_tenants_s": round(plan.patience_s - session.patience, 1),
            "tools": sorted({r["tool"] for r in session.runs if "tool" in r} | {"python-stream-client"})}
    return {"meta": meta, "summary": summary.summarize(session.runs, names, plan.latencies_ms, plan.rates, rss),
            "runs": session.runs}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="aimeter-bench-smoke-")) if args.smoke else BENCH_DIR / "results"
    results = run(args)
    report.write(results, args.out)
    why = draw_chart(args.out / "results.json", args.out / "chart.png")
    results["meta"]["chart"] = "chart.png" if why is None else f"not drawn: {why}"
    report.write(results, args.out)
    if why:
        log(f"no chart: {why}")
    log(f"wrote {args.out / 'results.json'}, results.md" + ("" if why else ", chart.png")
        + f" after {results['meta']['duration_s'] / 60:.1f} min")
    print(report.render_md(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
