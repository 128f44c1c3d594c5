"""Where the time goes: py-spy on the gateway at saturation, or on a pricer ingesting a backlog.

    python -m benchmarks.profile gateway [--seconds 10]
    python -m benchmarks.profile pricer [--events 100000]

Same setup as the benchmark (pinned cores, keys on, real Kafka, pricer running); py-spy samples
with --nonblocking so the profiled process is not paused. Prints the hottest functions by self
and by inclusive time, and writes the collapsed stacks next to the summary for a flame graph.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from aimeter.local.kafka import free_port
from benchmarks import phases, pipeline
from benchmarks.plan import SMOKE
from benchmarks.procs import AUX_CORE, Procs, wait_http
from benchmarks.session import Session, log

PY_SPY = Path(__file__).resolve().parent / ".venv-tools" / "bin" / "py-spy"
SKIP_FRAMES = ("_poll_loop",)  # the gateway's Kafka poll thread: waits in librdkafka, not request work


def record(pid: int, seconds: float, raw: Path) -> None:
    """py-spy record into collapsed-stack format, pinned to the aux core."""
    argv = ["taskset", "-c", str(AUX_CORE), str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds)),
            "--rate", "250", "--nonblocking", "--format", "raw", "--output", str(raw)]
    subprocess.run(argv, check=True, capture_output=True, timeout=seconds + 60)


def hottest(raw: Path, top: int = 30) -> str:
    """Self and inclusive shares of the samples, by function (file:line stripped to the function)."""
    own, incl, total = Counter(), Counter(), 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")]
        if any(skip in f for f in frames for skip in SKIP_FRAMES):
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            incl[frame] += int(count)
    lines = [f"{total} samples (250/s, busy threads only)", "", "self %  function"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in incl.most_common(top + 15)]
    return "\n".join(lines)


def profile_gateway(session: Session, seconds: float) -> Path:
    gateway = next(t for t in session.targets if t.name == "gateway")
    payload = phases.body(0)
    phases.saturation(gateway, payload, connections=64, seconds=2, scratch=session.work)  # warm up
    load = threading.Thread(target=phases.saturation, args=(gateway, payload),
                            kwargs={"connections": 64, "seconds": seconds + 2, "scratch": session.work})
    load.start()
    time.sleep(1)
    raw = session.work / "gateway.raw"
    record(gateway.pids()[0], seconds, raw)
    load.join()
    return raw


def profile_pricer(session: Session, events: int) -> Path:
    pipeline.preload(session.bootstrap, events)
    expected = pipeline.topic_size(session.bootstrap)
    port = free_port()
    data = session.work / "pricer-profile"
    env = {**session.env, "AIMETER_DATA_DIR": str(data), "AIMETER_QUERY_PORT": str(port),
           "AIMETER_PRICER_GROUP": f"bench-profile-{os.getpid()}"}
    proc = session.procs.spawn("pricer-profile", [sys.executable, "-m", "aimeter", "pricer"], 0, env=env)
    wait_http(proc, f"http://127.0.0.1:{port}/ping", timeout=120)
    raw = session.work / "pricer.raw"
    budget = max(5.0, expected / 3000)  # long enough to cover the ingest at the rates seen so far
    sampler = threading.Thread(target=record, args=(proc.pid, budget, raw))
    sampler.start()
    pipeline.wait_committed(env["AIMETER_KAFKA_BOOTSTRAP"], env["AIMETER_PRICER_GROUP"], expected, budget)
    sampler.join()
    return raw


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parent)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("what", choices=["gateway", "pricer"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--stacks", action="store_true", help="also write the collapsed stacks (for a flame graph)")
    args = parser.parse_args(argv)
    if not PY_SPY.is_file():
        print("py-spy is missing: run benchmarks/run.sh once (it creates benchmarks/.venv-tools)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {AUX_CORE})
    work = Path(tempfile.mkdtemp(prefix="aimeter-profile-"))
    session = Session(dataclasses.replace(SMOKE, reps=1), work, Procs(work / "logs"), {"nginx", "litellm"})
    try:
        session.start_kafka(None)
        session.start_upstream()
        if args.what == "gateway":
            session.start_proxies()
            raw = profile_gateway(session, args.seconds)
        else:
            raw = profile_pricer(session, args.events)
        text = hottest(raw)
        stacks = raw.read_text(encoding="utf-8")
    finally:
        session.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = (f"# py-spy, `python -m benchmarks.profile {args.what}`, {stamp}, commit {_commit()}\n"
            "# percentages are of sampled busy time; coroutine stacks can be cut short, so inclusive shares "
            "of the outer frames are lower bounds\n")
    (args.out / f"profile-{args.what}.txt").write_text(head + text + "\n", encoding="utf-8")
    if args.stacks:
        (args.out / f"profile-{args.what}.collapsed").write_text(stacks, encoding="utf-8")
    log(f"wrote {args.out / f'profile-{args.what}.txt'}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
