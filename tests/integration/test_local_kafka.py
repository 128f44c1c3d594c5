"""The local broker runner against a real Kafka 4.x JVM (jars cached under .aimeter/cache/kafka)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from aimeter.local.kafka import LocalKafka, free_port
from aimeter.local.kafka_jars import KafkaSetupError, ensure_jars

pytestmark = pytest.mark.integration

# Shared with other test modules and repeated runs so the ~45 s Maven download happens once.
CACHE = Path(__file__).resolve().parents[2] / ".aimeter" / "cache" / "kafka"


def _new_kafka(data_dir: Path) -> LocalKafka:
    return LocalKafka(data_dir, port=free_port(), controller_port=free_port(), cache_dir=CACHE)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = _new_kafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.stop()


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    # Idempotence keeps order across retries: the first sends to a just-created topic can be retried
    # while its leader is elected, and without it a retried "one" landed after "three" (seen in CI).
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value=value, key=b"k")  # one key: one partition, order kept
    assert producer.flush(15) == 0


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4()}",  # fresh group: reads from the start every time
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_produce_consume_and_data_survives_restart(kafka: LocalKafka) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    values = [b"one", b"two", b"three"]
    _produce(kafka.bootstrap, topic, values)
    assert _consume(kafka.bootstrap, topic, 3) == values

    kafka.stop()
    assert not kafka.running
    kafka.stop()  # idempotent
    assert kafka.start() == kafka.bootstrap
    assert _consume(kafka.bootstrap, topic, 3) == values


def test_restart_after_kill_keeps_acked_messages(kafka: LocalKafka) -> None:
    topic = f"k-{uuid.uuid4().hex[:8]}"
    _produce(kafka.bootstrap, topic, [b"a", b"b"])
    kafka.kill()
    assert not kafka.running
    kafka.start()
    assert _consume(kafka.bootstrap, topic, 2) == [b"a", b"b"]


def test_start_when_running_returns_bootstrap(kafka: LocalKafka) -> None:
    assert kafka.running
    assert kafka.start() == kafka.bootstrap
    assert kafka.bootstrap.startswith("127.0.0.1:")


def test_broker_writes_a_real_log(kafka: LocalKafka) -> None:
    text = kafka.log_path.read_text()
    assert "NOP" not in text  # an SLF4J binding is on the classpath
    assert "Kafka Server started" in text or "BrokerServer id=1" in text


def test_port_in_use_names_the_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        broker = LocalKafka(tmp_path, port=busy, controller_port=free_port(), cache_dir=CACHE)
        with pytest.raises(KafkaSetupError, match=str(busy)):
            broker.start()
    assert not broker.running


def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    # A storage dir formatted for another node id makes the JVM exit during start.
    (tmp_path / "kraft").mkdir()
    (tmp_path / "kraft" / "meta.properties").write_text(
        "version=1\ncluster.id=abcdefghijklmnopqrstuv\nnode.id=7\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    broker = _new_kafka(tmp_path)
    with pytest.raises(KafkaSetupError, match="exited during start") as err:
        broker.start(timeout=60)
    assert "node" in str(err.value).lower()
    assert not broker.running


def test_missing_java_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaSetupError, match=r"Java 17\+ not found on PATH: install openjdk-17"):
        LocalKafka(tmp_path / "data", cache_dir=tmp_path / "cache").start()


def test_missing_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaSetupError, match="Maven not found on PATH: install maven"):
        ensure_jars(tmp_path / "cache")


def test_cached_jars_are_reused_without_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    libs = ensure_jars(CACHE)
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn: a cache hit must not need it
    assert ensure_jars(CACHE, progress=pytest.fail) == libs
    assert any(libs.glob("kafka_2.13-*.jar"))


def test_half_finished_download_is_redone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "4.1.1" / "libs").mkdir(parents=True)
    (cache / "4.1.1" / "libs" / "truncated.jar").write_bytes(b"PK")  # no marker: Maven was cut off
    (cache / "m2").symlink_to(CACHE / "m2")  # reuse the downloaded artifacts: no network needed
    ensure_jars(CACHE)  # make sure the shared m2 is populated
    messages: list[str] = []
    libs = ensure_jars(cache, progress=messages.append)
    assert messages  # it did download again
    assert not (libs / "truncated.jar").exists()
    assert (cache / "4.1.1" / "libs.complete").read_text().split() == sorted(p.name for p in libs.glob("*.jar"))


def test_broker_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL runs no cleanup; PR_SET_DEATHSIG must still stop the JVM."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_DEATHSIG is Linux-only")
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from aimeter.local.kafka import LocalKafka, free_port
        k = LocalKafka(Path({str(tmp_path)!r}), port=free_port(), controller_port=free_port(),
                       cache_dir=Path({str(CACHE)!r}), progress=lambda _: None)
        k.start()
        print(k._proc.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        java_pid = int(parent.stdout.readline())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 20
    while _alive(java_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(java_pid)


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan may wait a moment for init to reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status
