"""The pricer's consumer loop against a real broker: commit after write, redeliver after a failure,
and replace a consumer whose lost session never came back (the recovery is real; the trigger is set)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from aimeter.events import USAGE_TOPIC
from aimeter.kafka_admin import ensure_topics
from aimeter.pricer.consumer import REJOIN_DEADLINE_S, ConsumerLoop, consumer_config

pytestmark = pytest.mark.integration


class Recorder:
    """The write callback: records values, optionally failing the first ``fail`` calls like a ClickHouse outage."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls = 0
        self.written: list[bytes] = []

    def __call__(self, values: list[bytes]) -> int:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("ClickHouse is down (test)")
        self.written.extend(values)
        return len(values)


def produce(bootstrap: str, prefix: str, n: int) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap})
    values = [f"{prefix}-{i}".encode() for i in range(n)]
    for v in values:
        producer.produce(USAGE_TOPIC, v)
    assert producer.flush(10) == 0
    return values


def run_until(loop: ConsumerLoop, rec: Recorder, prefix: str, n: int, timeout: float = 60.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = [v for v in rec.written if v.startswith(prefix.encode())]
        if len(mine) >= n:
            return mine
        loop.step()
    raise AssertionError(f"only {len(mine)} of {n} {prefix} messages consumed in {timeout:.0f} s")


@pytest.fixture
def group(kafka_bootstrap: str) -> str:
    ensure_topics(kafka_bootstrap)
    return f"consumer-test-{uuid.uuid4().hex[:8]}"


def make(bootstrap: str, group: str, rec: Recorder) -> ConsumerLoop:
    loop = ConsumerLoop(lambda: Consumer(consumer_config(bootstrap, group)), rec, batch_max=50,
                        poll_timeout_s=0.2)
    loop.subscribe()
    return loop


def test_a_failed_write_redelivers_the_batch_and_commits_nothing_before(kafka_bootstrap, group, monkeypatch):
    monkeypatch.setattr("aimeter.pricer.consumer.MAX_BACKOFF_S", 0.1)
    prefix = f"fail-{group}"
    sent = produce(kafka_bootstrap, prefix, 120)
    rec = Recorder(fail=2)
    loop = make(kafka_bootstrap, group, rec)
    try:
        got = run_until(loop, rec, prefix, 120)
    finally:
        loop.consumer.close()
    assert loop.failures == 0
    assert rec.calls > 2
    assert sorted(got) == sorted(sent), "every message exactly once after two failed writes"


def test_committed_offsets_survive_a_restart(kafka_bootstrap, group):
    prefix = f"restart-{group}"
    first = produce(kafka_bootstrap, prefix + "-a", 40)
    rec = Recorder()
    loop = make(kafka_bootstrap, group, rec)
    try:
        assert sorted(run_until(loop, rec, prefix + "-a", 40)) == sorted(first)
    finally:
        loop.consumer.close()
    second = produce(kafka_bootstrap, prefix + "-b", 30)
    rec2 = Recorder()
    loop2 = make(kafka_bootstrap, group, rec2)
    try:
        got = run_until(loop2, rec2, prefix + "-b", 30)
    finally:
        loop2.consumer.close()
    assert sorted(got) == sorted(second)
    assert not [v for v in rec2.written if v.startswith((prefix + "-a").encode())], "committed batches re-read"


def test_a_consumer_that_never_rejoins_is_replaced_and_resumes_where_it_committed(kafka_bootstrap, group):
    prefix = f"rejoin-{group}"
    first = produce(kafka_bootstrap, prefix + "-a", 40)
    rec = Recorder()
    loop = make(kafka_bootstrap, group, rec)
    try:
        run_until(loop, rec, prefix + "-a", 40)
        stuck = loop.consumer
        loop.lost_at = time.monotonic() - REJOIN_DEADLINE_S - 1  # as if the session was lost and never rejoined
        second = produce(kafka_bootstrap, prefix + "-b", 30)
        got = run_until(loop, rec, prefix + "-b", 30)
    finally:
        loop.consumer.close()
    assert loop.replaced == 1
    assert loop.consumer is not stuck
    assert loop.lost_at is None, "the replacement was assigned the partitions"
    assert sorted(got) == sorted(second)
    assert sorted(v for v in rec.written if v.startswith((prefix + "-a").encode())) == sorted(first), "no re-read"
