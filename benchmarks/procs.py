"""Child processes pinned to cores, and what the kernel says they cost (CPU time, peak RSS).

Every process of a run is pinned, so the two cores are used the same way in every run:
core 0 holds only the system under test, core 1 holds everything else (see README.md).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aimeter.local.kafka import death_signal_hook

SUT_CORE = 0  # the system under test, alone
AUX_CORE = 1  # load generator, fake upstream, Kafka, pricer (during proxy runs), this harness
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcError(RuntimeError):
    """A child did not come up; the message names it and quotes its log."""


@dataclass
class Proc:
    """One pinned child process and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    core: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The process and its descendants (nginx workers, a LiteLLM worker), for CPU and RSS."""
        return [self.pid, *descendants(self.pid)]

    def tail(self, lines: int = 25) -> str:
        self.log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (each of our children flushes on it), then SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@dataclass
class Procs:
    """All children of a run, stopped in reverse start order."""

    logs: Path
    running: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], core: int, env: dict[str, str] | None = None,
              cwd: Path | None = None, idle: bool = False) -> Proc:
        """Start ``argv`` under ``taskset -c core``; the kernel kills it if this harness dies.

        ``idle`` runs it (all its threads) under SCHED_IDLE: it gets only CPU time nothing else wants.
        """
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        log = log_path.open("ab")
        taskset = shutil.which("taskset")
        pinned = [taskset, "-c", str(core), *argv] if taskset else argv
        proc = subprocess.Popen(
            pinned, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            preexec_fn=_pin_and_watch(core, idle),  # noqa: PLW1509 - affinity, policy, death signal only
        )
        child = Proc(name, proc, log_path, log, core)
        self.running.append(child)
        return child

    def stop(self, child: Proc) -> None:
        child.stop()
        if child in self.running:
            self.running.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.running)):
            self.stop(child)


def _pin_and_watch(core: int, idle: bool = False):  # noqa: ANN202 - a preexec_fn
    """Affinity even without taskset installed, plus PR_SET_PDEATHSIG so no child outlives the harness.

    The scheduling policy is set before exec, so every thread the child starts inherits it.
    """
    hook = death_signal_hook()

    def run() -> None:
        os.sched_setaffinity(0, {core})
        if idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        if hook is not None:
            hook()

    return run


def wait_http(child: Proc, url: str, timeout: float = 90.0, headers: dict[str, str] | None = None) -> None:
    """Poll ``url`` until it answers 2xx; fail early, with the child's log, if the child exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise ProcError(f"{child.name} exited with code {child.proc.returncode}; log {child.log_path}:\n"
                            + child.tail())
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise ProcError(f"{child.name} did not answer {url} within {timeout:.0f} s; log {child.log_path}:\n"
                    + child.tail())


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid``, from /proc (no psutil dependency)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def peak_rss_mb(pids: list[int]) -> float:
    """Sum of each process's high-water RSS (VmHWM): an upper bound on the tree's peak, in MiB."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1)


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / CLK_TCK


def _ours_s() -> float:
    """CPU seconds of this harness, its reaped children (wrk, vegeta) and its live descendants."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    own = sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    return own + cpu_seconds(descendants(os.getpid()))


class Background:
    """How many cores other tenants of the shared box used while we measured (machine busy - ours)."""

    def __init__(self) -> None:
        self.start = (time.perf_counter(), _machine_busy_s(), _ours_s())

    def cores(self) -> float:
        wall0, busy0, ours0 = self.start
        wall = time.perf_counter() - wall0
        return round(max(0.0, (_machine_busy_s() - busy0) - (_ours_s() - ours0)) / wall, 2) if wall > 0 else 0.0


def wait_quiet(max_wait_s: float, threshold_cores: float = 0.3, window_s: float = 1.0) -> tuple[float, float]:
    """Wait (bounded) for other tenants to use less than ``threshold_cores``; returns (waited s, last load).

    Other engineers' test suites share these two cores; starting a measurement in a lull, and
    recording the load either way, is all a guest can do about that without slowing them down.
    """
    start = time.perf_counter()
    while True:
        meter = Background()
        time.sleep(window_s)
        load = meter.cores()
        waited = time.perf_counter() - start
        if load < threshold_cores or waited >= max_wait_s:
            return round(waited, 1), load


def cpu_available(core: int, seconds: float = 0.3) -> float:
    """Share of wall time a busy loop got on ``core``: below 1.0, someone else (another tenant) used it.

    The box is shared, so every repetition records this next to its numbers.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        while time.perf_counter() - start_wall < seconds:
            pass
        return round((time.thread_time() - start_cpu) / (time.perf_counter() - start_wall), 3)
    finally:
        os.sched_setaffinity(0, before)


def machine() -> dict[str, object]:
    """What the md must name: cores, CPU model, kernel, Python."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "memory_gib": round(mem_kb / 1024 / 1024, 1), "python": platform.python_version()}
