"""The drill's child processes: each with its own log, the kernel's death signal, and a stop that always ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from aimeter.local.kafka import death_signal_hook


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any AIMETER_ variable, plus ``settings`` as AIMETER_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMETER_")}
    return env | {f"AIMETER_{k.upper()}": v for k, v in settings.items()}


class Procs:
    """Named children. :meth:`stop_all` ends every one still running (SIGTERM, then SIGKILL after a grace)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: dict[str, IO[bytes]] = {}

    def aimeter(self, name: str, args: list[str], env: dict[str, str], prefix: list[str] | None = None,
                ) -> subprocess.Popen[bytes]:
        """Run ``python -m aimeter <args>``, inside a network namespace when ``prefix`` is ``ip netns exec NS``."""
        return self.spawn(name, [*(prefix or []), sys.executable, "-m", "aimeter", *args], env)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=death_signal_hook(), start_new_session=True,  # noqa: PLW1509 - only sets the death signal
        )
        self.procs[name], self._files[name] = proc, log
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def kill9(self, name: str) -> None:
        self._end(name, signal.SIGKILL, 10.0)

    def stop(self, name: str, grace: float = 30.0) -> int | None:
        return self._end(name, signal.SIGTERM, grace)

    def _end(self, name: str, sig: signal.Signals, grace: float) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._files.pop(name).close()
        return proc.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
