"""A single-node Apache Kafka (KRaft) broker on 127.0.0.1, built from Maven Central jars.

This machine has no Docker engine, so the project runs the real broker itself: Maven copies
the runtime jars of ``kafka_2.13`` into a cache once, and :class:`LocalKafka` formats a data
directory and runs ``kafka.Kafka`` on it in a child JVM that dies with its parent.
"""

from __future__ import annotations

import base64
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from aimeter.local.kafka_jars import KafkaSetupError, ensure_jars, find_java

_LOG_TAIL_LINES = 20
_PR_SET_DEATHSIG = 1

# Everything goes to stdout, which the runner redirects into <data_dir>/kafka.log.
_LOG4J_CONFIG = """status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def free_port() -> int:
    """An unused 127.0.0.1 TCP port (free now; a race is possible but rare in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    """Whether a listener holds the port; SO_REUSEADDR like the JVM, so TIME_WAIT is not 'in use'."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _new_cluster_id() -> str:
    """Kafka's Uuid text form (url-safe base64, no padding); saves a JVM start of StorageTool."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka rejects ids that look like command-line flags
            return text


def death_signal_hook(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn making the kernel send ``sig`` (SIGTERM) to a child when the thread that started it dies.

    Call it in the parent just before ``Popen(..., preexec_fn=death_signal_hook())``; it is
    None off Linux, where Popen simply runs no hook.

    prctl is resolved here, before fork: the child of a threaded parent (librdkafka runs
    threads) should do as little as possible, and dlopen could deadlock on a loader lock.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_DEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # parent died before prctl took effect
            os._exit(1)

    return hook


class LocalKafka:
    """One KRaft broker+controller process bound to 127.0.0.1, with its data in ``data_dir``.

    Restarting on the same ``data_dir`` keeps topics and messages. The child gets
    PR_SET_DEATHSIG from the *thread* that calls :meth:`start`, so start it from a thread that
    lives as long as the broker should (normally the main thread).
    """

    death_signal = signal.SIGTERM  # what the JVM gets when the thread that started it dies

    def __init__(self, data_dir: Path, *, port: int = 9092, controller_port: int = 9093,
                 cache_dir: Path | None = None, progress: Callable[[str], None] = print) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.controller_port = controller_port
        self.cache_dir = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "aimeter" / "kafka"
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "kafka.log"

    def start(self, timeout: float = 90.0) -> str:
        """Start the broker (formatting storage on first use) and return the bootstrap address."""
        if self.running:
            return self.bootstrap
        java = find_java()
        libs = ensure_jars(self.cache_dir, progress=self._progress)
        for port in (self.port, self.controller_port):
            if _port_in_use(port):
                raise KafkaSetupError(f"port {port} on 127.0.0.1 is already in use: stop whatever "
                                      f"listens there or pick another port for LocalKafka")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        self._format(java, libs, props)
        self._spawn(java, libs, props)
        try:
            self._wait_ready(timeout)
        except BaseException:  # incl. Ctrl-C: never leave a half-started JVM behind
            self.stop()
            raise
        return self.bootstrap

    def _write_config(self) -> Path:
        """(Re)write the broker config each start, so changed ports take effect on restart."""
        cport = self.controller_port
        lines = [
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cport}",
            f"listeners=PLAINTEXT://{self.bootstrap},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://{self.bootstrap}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.data_dir / 'kraft'}", "num.partitions=4",
            "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1", "group.initial.rebalance.delay.ms=0",
            # After kill() the restarted broker cannot register until its old session expires
            # (default 9 s); on loopback a short session costs nothing and speeds fault tests.
            "broker.heartbeat.interval.ms=500", "broker.session.timeout.ms=3000",
            # Internal topics default to 50 partitions each: on one small node that is start-up
            # time (every restart loads them all) and no gain.
            "offsets.topic.num.partitions=1", "transaction.state.log.num.partitions=1",
        ]
        props = self.data_dir / "server.properties"
        props.write_text("\n".join(lines) + "\n")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J_CONFIG)
        return props

    def _java_cmd(self, java: str, libs: Path, *args: str) -> list[str]:
        log_conf = self.data_dir / "log4j2.properties"
        return [java, "-Xmx512m", f"-Dlog4j2.configurationFile={log_conf}", "-cp", f"{libs}/*", *args]

    def _format(self, java: str, libs: Path, props: Path) -> None:
        """Format the log dir once; the cluster id is kept in data_dir so restarts match it."""
        if (self.data_dir / "kraft" / "meta.properties").is_file():
            return
        id_file = self.data_dir / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(_new_cluster_id() + "\n")
        cmd = self._java_cmd(java, libs, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                             "-t", id_file.read_text().strip(), "-c", str(props))
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if out.returncode != 0:
            raise KafkaSetupError(f"formatting Kafka storage in {self.data_dir} failed "
                                  f"(exit {out.returncode}):\n{out.stdout}{out.stderr}")

    def _spawn(self, java: str, libs: Path, props: Path) -> None:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(  # noqa: S603
            self._java_cmd(java, libs, "kafka.Kafka", str(props)),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.data_dir, process_group=0, preexec_fn=death_signal_hook(self.death_signal),  # noqa: PLW1509
        )

    def _wait_ready(self, timeout: float) -> None:
        """Wait for a TCP accept (quietly), then for metadata via the admin API."""
        deadline = time.monotonic() + timeout
        admin: AdminClient | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise KafkaSetupError(f"Kafka exited during start; last lines of {self.log_path}:\n"
                                      f"{self._log_tail()}")
            if admin is None and self._accepts():
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
            if admin is not None and self._has_metadata(admin):
                return
            time.sleep(0.2)
        raise KafkaSetupError(f"Kafka did not become ready on {self.bootstrap} within {timeout:.0f}s; "
                              f"last lines of {self.log_path}:\n{self._log_tail()}")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @staticmethod
    def _has_metadata(admin: AdminClient) -> bool:
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except KafkaException:
            return False

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Kafka shuts down cleanly), wait, then SIGKILL. Safe to call repeatedly."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL without a clean shutdown, to test crash recovery."""
        self._end(signal.SIGKILL, None)

    def _end(self, sig: signal.Signals, grace: float | None) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

