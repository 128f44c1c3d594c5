"""The whole local stack in one command: Kafka (unless configured), pricer, gateway, fake upstream.

Each part runs as its own process, exactly as in production: the pricer owns the embedded
ClickHouse and serves read-only queries, so this process and ``aimeter spend`` can read it.
No part waits for Kafka: the gateway journals events and the pricer waits until it answers.
:meth:`Stack.supervise` restarts a part that exited, with backoff, while the others keep serving.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aimeter.local.kafka import KafkaSetupError, LocalKafka, death_signal_hook
from aimeter.settings import Settings


class StackError(RuntimeError):
    """A part of the stack did not come up; the message names it and its log file."""


RESTART_BASE_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a part that ran this long before exiting restarts after the base delay again


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    args: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    failures: int = 0  # exits in a row that came sooner than STABLE_S after a start
    restart_at: float | None = None  # set while it is down and waiting for its restart

    @property
    def state(self) -> str:
        if self.restart_at is not None:
            wait = max(0.0, self.restart_at - time.monotonic())
            return f"{self.name} down (exit {self.proc.returncode}), restart in {wait:.0f} s"
        return f"{self.name} up"


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
        """Start every part; none waits for Kafka (with AIMETER_KAFKA_BOOTSTRAP it may come later)."""
        self.check_ports()
        data = self.settings.data_dir.resolve()
        if self.settings.kafka_bootstrap:
            self.bootstrap = self.settings.kafka_bootstrap
            print(f"up: using Kafka at {self.bootstrap} (AIMETER_KAFKA_BOOTSTRAP); the parts wait for it "
                  "if it does not answer yet", flush=True)
        else:
            self.kafka = LocalKafka(data / "kafka", port=self.settings.kafka_port,
                                    controller_port=self.settings.kafka_port + 1, cache_dir=data / "cache" / "kafka")
            try:
                self.bootstrap = self.kafka.start()
            except KafkaSetupError as exc:
                raise StackError(f"local Kafka: {exc}") from None
            print(f"up: local Kafka listening on {self.bootstrap}", flush=True)
        if self.fake_upstream_port is not None:
            self._spawn("fake-upstream", ["fake-upstream", "--port", str(self.fake_upstream_port)])
            self._wait_http("fake-upstream", f"http://127.0.0.1:{self.fake_upstream_port}/health")
        self.start_child("pricer")
        self.start_child("gateway")

    def check_ports(self) -> None:
        """A port already taken is a one-line error before anything starts, not a child's traceback."""
        wanted = [("gateway", self.settings.gateway_host, self.settings.gateway_port)]
        if self.settings.resolved_clickhouse_url.startswith("chdb://"):
            wanted.append(("query endpoint", "127.0.0.1", self.settings.query_port))
        if self.fake_upstream_port is not None:
            wanted.append(("demo fake upstream (--upstream-port, AIMETER_DEMO_UPSTREAM_PORT)", "127.0.0.1",
                           self.fake_upstream_port))
        for what, host, port in wanted:
            if port_taken(host, port):
                raise StackError(f"port {port} on {host} for the {what} is already in use: stop what listens "
                                 "there or choose another port")

    def _popen(self, name: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path, IO[bytes]]:
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
        return proc, log_path, log

    def _spawn(self, name: str, args: list[str]) -> None:
        proc, log_path, log = self._popen(name, args)
        self.children.append(Child(name, proc, log_path, log, args))
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

    def supervise(self) -> list[str]:
        """One round: a part that exited is restarted after a backoff (1 s doubling to 30 s; back to 1 s
        after it ran a minute). Returns what changed, one line each; the other parts are never touched."""
        now, changes = time.monotonic(), []
        for child in self.children:
            if child.restart_at is None:
                code = child.proc.poll()
                if code is None:
                    continue
                uptime = now - child.started_at
                child.failures = 0 if uptime >= STABLE_S else child.failures + 1
                delay = min(RESTART_MAX_S, RESTART_BASE_S * 2 ** max(child.failures - 1, 0))
                child.restart_at = now + delay
                changes.append(f"{child.name} exited with code {code} after {uptime:.0f} s; restarting it in "
                               f"{delay:.0f} s (log {child.log_path})")
            elif now >= child.restart_at:
                child.log.close()
                child.proc, child.log_path, child.log = self._popen(child.name, child.args)
                child.started_at, child.restart_at = now, None
                child.restarts += 1
                changes.append(f"{child.name} restarted (pid {child.proc.pid}, restart {child.restarts})")
        if self.kafka is not None and not self.kafka.running:
            changes.append(self._restart_kafka())
        return changes

    def _restart_kafka(self) -> str:
        assert self.kafka is not None
        try:
            self.kafka.start()
        except KafkaSetupError as exc:
            return f"local Kafka exited and did not restart ({str(exc).splitlines()[0]}); trying again"
        return f"local Kafka exited; restarted on {self.bootstrap}"

    def status(self) -> str:
        parts = ([f"kafka {'up' if self.kafka.running else 'down'}"] if self.kafka is not None else []) + [
            c.state for c in self.children]
        return "status: " + ", ".join(parts)

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


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on host:port (bind test, so a listener on 0.0.0.0 counts too)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
