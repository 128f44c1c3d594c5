"""Gateway keys shared through the compacted Kafka topic ai.keys.v1 (issue 21): two gateway processes on one
topic, a revocation under traffic, a gateway started without Kafka, hostile records, and `aimeter keys import`.

Each gateway is a real `aimeter gateway` process on loopback, in front of the project's fake upstream, reading
the session's real Kafka; keys are made with the real `aimeter keys` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from aimeter import cli
from aimeter.events import KEYS_TOPIC
from aimeter.gateway import keys_kafka
from aimeter.gateway.keys import MAX_LIMITS_BYTES, KeyFile, encode_record, new_key
from aimeter.gateway.keys_kafka import KeysTopic
from aimeter.local.kafka import LocalKafka, death_signal_hook, free_port
from aimeter.local.stack import settings_env
from aimeter.settings import Settings
from tests.support.stack import CONFIG
from tests.support.upstream_thread import fake_upstream_thread

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fake: prompt=10 completion=5"}]})


@dataclass
class GatewayProc:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_gateway(data: Path, bootstrap: str, upstream_port: int, name: str, **settings: object) -> GatewayProc:
    data.mkdir(parents=True, exist_ok=True)
    config = data / "config.yaml"
    config.write_text(CONFIG.format(port=upstream_port), encoding="utf-8")
    port = free_port()
    env = {**os.environ, **settings_env(Settings(data_dir=data, kafka_bootstrap=bootstrap, gateway_port=port,
                                                 gateway_id=name, config=config, **settings))}  # type: ignore[arg-type]
    log_path = data / f"{name}.log"
    log = log_path.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "aimeter", "gateway"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, preexec_fn=death_signal_hook(), start_new_session=True)  # noqa: PLW1509
    gateway = GatewayProc(f"http://127.0.0.1:{port}", proc, log_path, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            gateway.stop()
            raise AssertionError(f"gateway {name} exited {proc.returncode}:\n{gateway.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{gateway.url}/health", timeout=2):
                return gateway
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    gateway.stop()
    raise AssertionError(f"gateway {name} did not answer within 60 s:\n{gateway.log_text()[-3000:]}")


def status(gateway_url: str, key: str, *, chat: bool = True) -> int:
    """HTTP status of one request with ``key``: a chat completion (through the fake upstream) or the model list."""
    request = urllib.request.Request(
        f"{gateway_url}/v1/chat/completions" if chat else f"{gateway_url}/v1/models",
        data=BODY.encode() if chat else None,
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def eventually_status(gateway_url: str, key: str, wanted: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := status(gateway_url, key, chat=False)) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{gateway_url} answered {got} for the key, not {wanted}, after {timeout} s")
        time.sleep(0.05)


def aimeter_keys(bootstrap: str, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "AIMETER_KAFKA_BOOTSTRAP": bootstrap, "AIMETER_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", "aimeter", "keys", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def end_offset(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keys-kafka-test"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(KEYS_TOPIC, 0), timeout=10)[1])
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    with fake_upstream_thread() as port:
        yield port


@pytest.fixture(scope="module")
def two_gateways(kafka_bootstrap: str, upstream_port: int, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[list[GatewayProc]]:
    root = tmp_path_factory.mktemp("keys-kafka")
    gateways: list[GatewayProc] = []
    try:
        for name in ("gw-a", "gw-b"):  # separate data dirs: nothing is shared but Kafka
            gateways.append(start_gateway(root / name, kafka_bootstrap, upstream_port, name))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


@dataclass
class Traffic:
    """Requests with one key against one gateway, in a loop: (sent at, answered at, status) each."""

    gateway_url: str
    key: str
    results: list[tuple[float, float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            code = status(self.gateway_url, self.key)
            self.results.append((sent, time.monotonic(), code))

    def first_refusal(self) -> float | None:
        return next((answered for _, answered, code in self.results if code == 401), None)


def test_a_key_made_by_the_cli_works_on_both_gateways_and_its_revocation_reaches_both_within_a_second(
        two_gateways, kafka_bootstrap, tmp_path, monkeypatch):
    created = aimeter_keys(kafka_bootstrap, tmp_path, "create", "--team", "kafka-keys", "--project", "p1")
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[0]
    key_id = key.split("_")[1]
    assert f"Kafka topic {KEYS_TOPIC} at {kafka_bootstrap}" in created.stdout
    for gateway in two_gateways:
        eventually_status(gateway.url, key, 200, timeout=5)
        assert status(gateway.url, key) == 200  # a real request, forwarded upstream
    listed = aimeter_keys(kafka_bootstrap, tmp_path, "list")
    assert key_id in listed.stdout
    assert key.split("_")[2] not in listed.stdout

    traffic = [Traffic(g.url, key) for g in two_gateways]
    threads = [threading.Thread(target=t.run, daemon=True) for t in traffic]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # traffic flows on both
    assert all(t.results and all(code == 200 for *_, code in t.results) for t in traffic)

    # The revoke command runs in this process (same code as the console script), so its start and its return
    # (after Kafka acknowledged the record with acks=all) are timestamps on the traffic's clock.
    for name, value in {"AIMETER_KAFKA_BOOTSTRAP": kafka_bootstrap, "AIMETER_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    assert cli.main(["keys", "revoke", key_id]) == 0
    acknowledged = time.monotonic()
    deadline = time.monotonic() + 5
    while any(t.first_refusal() is None for t in traffic) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # and it stays refused
    for t in traffic:
        t.stop.set()
    for thread in threads:
        thread.join(15)

    refusals = [t.first_refusal() for t in traffic]
    assert all(r is not None for r in refusals), "a gateway never refused the revoked key"
    delays = [r - acknowledged for r in refusals if r is not None]
    print(f"\nrevoke command took {acknowledged - started:.3f} s; refused by gw-a {delays[0] * 1000:+.0f} ms and "
          f"gw-b {delays[1] * 1000:+.0f} ms after Kafka acknowledged it ({(max(refusals) - started):.3f} s after "
          f"the command started); requests sent: {[len(t.results) for t in traffic]}")
    assert max(delays) < 1.0
    for t in traffic:  # once refused, never accepted again: nothing sent after the first 401 got a 200
        first = t.first_refusal()
        assert not [1 for sent, _, code in t.results if first is not None and sent > first and code != 401]


def produce_raw(bootstrap: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in messages:
        producer.produce(KEYS_TOPIC, key=key, value=value)
    assert producer.flush(30) == 0


def test_hostile_records_are_skipped_with_one_line_each_and_never_grant_access(two_gateways, kafka_bootstrap):
    now = datetime.now(UTC)
    oversized_key, oversized = new_key("hostile", "", "", now)
    versioned_key, versioned = new_key("hostile", "", "", now)
    revoked_key, revoked = new_key("hostile", "", "", now)
    mismatched_key, mismatched = new_key("hostile", "", "", now)
    good_key, good = new_key("hostile", "", "", now)
    revoked = replace(revoked, revoked_at=now.isoformat())
    KeysTopic(kafka_bootstrap).put([revoked])

    def value(record, **changes) -> bytes:
        data = json.loads(encode_record(record))
        data.update(changes)
        return json.dumps(data).encode()

    hostile = [
        (b"junk", b"{not json"),
        (oversized.key_id.encode(), value(oversized, limits={"pad": "x" * MAX_LIMITS_BYTES})),  # a valid key otherwise
        (versioned.key_id.encode(), value(versioned, v=2)),
        (revoked.key_id.encode(), value(revoked, revoked_at="", v="1")),  # an "un-revoke" with a wrong version
        (mismatched.key_id.encode() + b"x", encode_record(mismatched)),  # key differs from key_id
        (b"list", b"[1, 2, 3]"),
        (b"deep", b"[" * 100_000 + b"]" * 100_000),  # past the size bound, and would recurse
    ]
    produce_raw(kafka_bootstrap, [*hostile, (good.key_id.encode(), encode_record(good))])

    for gateway in two_gateways:
        eventually_status(gateway.url, good_key, 200, timeout=5)  # the reader lives on, past every bad record
        for refused in (oversized_key, versioned_key, revoked_key, mismatched_key):
            assert status(gateway.url, refused, chat=False) == 401
        log = gateway.log_text()
        for key_id in ("junk", oversized.key_id, versioned.key_id, revoked.key_id, "list", "deep"):
            lines = [line for line in log.splitlines() if "skipped the record" in line and f"'{key_id}'" in line]
            assert len(lines) == 1, (key_id, lines)
        assert sum(f"'{mismatched.key_id}x'" in line for line in log.splitlines()) == 1
        assert "exceeds 16384" in log
        assert "version '2' is not 1" in log
        assert gateway.proc.poll() is None


def test_a_gateway_that_cannot_reach_kafka_serves_its_snapshot_says_so_and_catches_up(
        kafka_bootstrap, upstream_port, tmp_path):
    key, record = new_key("snapshot-test", "", "", datetime.now(UTC))
    KeysTopic(kafka_bootstrap).put([record])
    data = tmp_path / "gw"
    first = start_gateway(data, kafka_bootstrap, upstream_port, "gw-snap")
    try:
        eventually_status(first.url, key, 200)
    finally:
        first.stop()
    snapshot = data / "keys.snapshot.json"
    assert snapshot.stat().st_mode & 0o777 == 0o600
    assert record.key_id in snapshot.read_text()
    assert key.split("_")[2] not in snapshot.read_text()

    # Kafka "down": nothing listens on this port yet.
    down = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    second = start_gateway(data, down, upstream_port, "gw-snap", keys_start_wait_s=1.0)
    try:
        print(f"\ngateway with Kafka unreachable served after {time.monotonic() - started:.1f} s")
        assert status(second.url, key, chat=False) == 200
        said = [line for line in second.log_text().splitlines() if "local snapshot" in line]
        assert len(said) == 1, said
        assert f"Kafka at {down} did not answer" in said[0]
        assert str(snapshot) in said[0]

        # Kafka comes up at that address (a new cluster): the gateway reads it and from then on serves what its
        # topic holds, a key made there and the snapshot's key revoked there.
        port = int(down.rsplit(":", 1)[1])
        kafka = LocalKafka(tmp_path / "kafka", port=port, controller_port=free_port(),
                           cache_dir=REPO / ".aimeter" / "cache" / "kafka")
        kafka.start()
        try:
            new, new_record = new_key("snapshot-test", "", "", datetime.now(UTC))
            KeysTopic(down, timeout=30).put([replace(record, revoked_at=datetime.now(UTC).isoformat()), new_record])
            written = time.monotonic()
            eventually_status(second.url, new, 200, timeout=30)
            eventually_status(second.url, key, 401, timeout=5)
            assert "caught up with Kafka topic ai.keys.v1" in second.log_text()
            print(f"caught up with the new Kafka {time.monotonic() - written:.2f} s after the records were written")
        finally:
            kafka.stop()
    finally:
        second.stop()


def test_keys_import_moves_a_key_file_into_the_topic_once(kafka_bootstrap, two_gateways, tmp_path):
    now = datetime.now(UTC)
    key, active = new_key("import-test", "p", "u", now)
    _, gone = new_key("import-test", "", "", now)
    gone = replace(gone, revoked_at=now.isoformat())
    path = tmp_path / "keys.json"
    KeyFile(path).save({active.key_id: active, gone.key_id: gone})

    first = aimeter_keys(kafka_bootstrap, tmp_path, "import", str(path))
    assert first.returncode == 0, first.stderr
    assert "2 written, 0 already present" in first.stdout
    for gateway in two_gateways:
        eventually_status(gateway.url, key, 200, timeout=5)
    stored = KeysTopic(kafka_bootstrap).load()
    assert (stored[active.key_id], stored[gone.key_id]) == (active, gone)

    end = end_offset(kafka_bootstrap)
    again = aimeter_keys(kafka_bootstrap, tmp_path, "import", str(path))
    assert again.returncode == 0, again.stderr
    assert "0 written, 2 already present" in again.stdout
    assert end_offset(kafka_bootstrap) == end  # nothing produced the second time

    # Revoked in the topic since: a re-import of the old file does not bring the key back.
    assert aimeter_keys(kafka_bootstrap, tmp_path, "revoke", active.key_id).returncode == 0
    third = aimeter_keys(kafka_bootstrap, tmp_path, "import", str(path))
    assert "0 written, 1 already present, 1 kept revoked" in third.stdout
    for gateway in two_gateways:
        eventually_status(gateway.url, key, 401, timeout=5)


def test_keys_command_says_what_to_do_when_kafka_is_unreachable(tmp_path):
    down = f"127.0.0.1:{free_port()}"
    env = {"PATH": "/usr/bin:/bin", "AIMETER_KAFKA_BOOTSTRAP": down, "AIMETER_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "aimeter", "keys", "create", "--team", "t"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2
    assert f"Kafka at {down}" in out.stderr
    assert "nothing was written" in out.stderr
    assert "AIMETER_KAFKA_BOOTSTRAP" in out.stderr
    assert not out.stdout  # no key printed for a record that was never stored


def test_a_reader_that_fails_starts_over_instead_of_freezing_the_keys(kafka_bootstrap, tmp_path, monkeypatch):
    """A fault in the reader (injected: the first record it applies raises) must not leave revocations unapplied."""
    real, calls = keys_kafka.apply_message, []

    def failing_once(*args):
        calls.append(args[2])
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return real(*args)

    _, record = new_key("reader-fault", "", "", datetime.now(UTC))
    KeysTopic(kafka_bootstrap).put([record])
    monkeypatch.setattr(keys_kafka, "apply_message", failing_once)
    store = keys_kafka.KafkaKeyStore(kafka_bootstrap, tmp_path / "keys.snapshot.json", who="test")
    try:
        store.start(wait_s=10)  # the first pass fails on its first record; the second, a second later, reads all
        KeysTopic(kafka_bootstrap).put([replace(record, revoked_at=datetime.now(UTC).isoformat())])
        deadline = time.monotonic() + 10
        while (current := store.records.get(record.key_id)) is None or current.active:
            assert time.monotonic() < deadline, "the revocation never reached the reader after its fault"
            time.sleep(0.05)
        assert len(calls) > 1
        assert store.caught_up.is_set()
    finally:
        store.close()


def test_the_reader_never_changes_a_dict_it_published(kafka_bootstrap, tmp_path):
    """Other threads iterate ``records`` (the budgets gate does, once a second): a dict the reader handed out must
    not grow under them (``RuntimeError: dictionary changed size during iteration``), so each batch is a new dict."""
    store = keys_kafka.KafkaKeyStore(kafka_bootstrap, tmp_path / "keys.snapshot.json", who="test")
    try:
        assert store.start(wait_s=10)
        published = store.records
        before = dict(published)
        _, record = new_key("copy-on-write", "", "", datetime.now(UTC))
        KeysTopic(kafka_bootstrap).put([record])
        deadline = time.monotonic() + 10
        while record.key_id not in store.records:
            assert time.monotonic() < deadline, "the new key never reached the reader"
            time.sleep(0.01)
        assert published == before  # the dict handed out earlier is as it was
        assert store.records is not published
    finally:
        store.close()
