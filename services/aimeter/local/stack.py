"""The whole local stack in one command: Kafka (unless configured), pricer, gateway, fake upstream.

Each part runs as its own process, exactly as in production: the pricer owns the embedded
ClickHouse and serves read-only queries, so this process and ``aimeter spend`` can read it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aimeter.kafka_admin import ensure_topics
from aimeter.local.kafka import LocalKafka, death_signal_hook
from aimeter.settings import Settings


class StackError(RuntimeError):
    """A part of the stack did not come up; the message names it and its log file."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


@dataclass
class Stack:
    settings: Settings
    config_path: Path
    fake_upstream_port: int | None = None
    children: list[Child] = field(default_factory=list)
    kafka: LocalKafka | None = None
    bootstrap: str = ""

    @property
    def gateway_url(self) -> str:
        return f"http://{self.settings.gateway_host}:{self.settings.gateway_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.query_port}"

    def start(self) -> None:
        data = self.settings.data_dir.resolve()
        if self.settings.kafka_bootstrap:
            self.bootstrap = self.settings.kafka_bootstrap
            print(f"up: using Kafka at {self.bootstrap} (AIMETER_KAFKA_BOOTSTRAP)", flush=True)
        else:
            self.kafka = LocalKafka(data / "kafka", port=self.settings.kafka_port,
                                    controller_port=self.settings.kafka_port + 1, cache_dir=data / "cache" / "kafka")
            self.bootstrap = self.kafka.start()
            print(f"up: local Kafka listening on {self.bootstrap}", flush=True)
        ensure_topics(self.bootstrap)
        if self.fake_upstream_port is not None:
            self._spawn("fake-upstream", ["fake-upstream", "--port", str(self.fake_upstream_port)])
            self._wait_http("fake-upstream", f"http://127.0.0.1:{self.fake_upstream_port}/health")
        self.start_child("pricer")
        self.start_child("gateway")

    def _spawn(self, name: str, args: list[str]) -> None:
        logs = self.settings.data_dir.resolve() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        # Children get this process's settings verbatim, so every part agrees on ports, paths and Kafka.
        env = {**os.environ, **settings_env(self.settings), "AIMETER_KAFKA_BOOTSTRAP": self.bootstrap,
               "AIMETER_CONFIG": str(self.config_path.resolve()),
               "AIMETER_DATA_DIR": str(self.settings.data_dir.resolve())}
        log = log_path.open("ab")
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
            [sys.executable, "-m", "aimeter", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=death_signal_hook(), start_new_session=True,  # noqa: PLW1509 - only sets the death signal
        )
        self.children.append(Child(name, proc, log_path, log))
        print(f"up: started {name} (pid {proc.pid}, log {log_path})", flush=True)

    def _wait_http(self, name: str, url: str, timeout: float = 60.0) -> None:
        child = self.child(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise StackError(f"{name} exited with code {child.proc.returncode}; see {child.log_path}:\n"
                                 + _tail(child.log_path))
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback URL we built
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise StackError(f"{name} did not answer {url} within {timeout:.0f} s; see {child.log_path}")

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def stop_child(self, name: str, *, kill: bool = False) -> int:
        """Stop one part (SIGTERM, or SIGKILL for fault tests); returns its exit code."""
        child = self.child(name)
        if kill:
            child.proc.kill()
        else:
            child.proc.terminate()
        code = child.proc.wait(timeout=60)
        child.log.close()
        self.children.remove(child)
        return code

    def start_child(self, name: str) -> None:
        """(Re)start one part and wait until it answers."""
        self._spawn(name, [name])
        if name == "gateway":
            self._wait_http(name, f"{self.gateway_url}/health")
        elif name == "pricer" and self.settings.resolved_clickhouse_url.startswith("chdb://"):
            self._wait_http(name, f"{self.query_url}/ping")

    def stop(self) -> None:
        """Gateway first (it flushes events), then pricer (it finishes its batch), then Kafka."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
                try:
                    child.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
            child.log.close()
        self.children.clear()
        if self.kafka is not None:
            self.kafka.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    return {f"AIMETER_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
