"""The gateway's publisher against an in-memory producer (tests/support/fake_kafka.py): what reaches the topic,
what a failed delivery or a full queue spools, what a graceful stop does with the undelivered, and that the
next start re-publishes the spool. Real-broker tests: tests/integration/test_faults.py, test_end_to_end.py."""

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from aimeter.gateway import publisher as publisher_module
from aimeter.gateway.journal import list_segments, read_records
from aimeter.gateway.publisher import KafkaPublisher
from tests.support.fake_kafka import ProducerBroker

AT = datetime(2026, 12, 6, 19, 36, tzinfo=UTC)


def event(i: int) -> bytes:
    return orjson.dumps({"schema_version": "1", "event_id": f"e{i}", "started_at": "2026-12-06T19:36:22.1Z",
                         "ended_at": "2026-12-06T19:36:22.2Z"})


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> ProducerBroker:
    fake = ProducerBroker()
    monkeypatch.setattr(publisher_module, "Producer", fake.producer)
    return fake


def publisher_in(tmp_path: Path) -> KafkaPublisher:
    made = KafkaPublisher("fake:9092", tmp_path / "gw.jsonl", "/test", counts_path=tmp_path / "counts.json",
                          journal_dir=tmp_path / "gw.journal", delivery_timeout_s=60)
    made.start()
    return made


def publish(publisher: KafkaPublisher, ids: range) -> None:
    for i in ids:
        publisher.publish_encoded(event(i), f"e{i}", AT, AT)


def spooled(tmp_path: Path) -> list[bytes]:
    path = tmp_path / "gw.jsonl"
    return read_records(path) if path.exists() else []


def test_a_delivered_event_reaches_the_topic_keyed_by_event_id_with_cloudevents_headers(broker, tmp_path):
    publisher = publisher_in(tmp_path)
    publish(publisher, range(3))
    publisher.close(timeout=1)
    assert broker.values() == [event(i) for i in range(3)]
    assert [m.key() for m in broker.log] == [b"e0", b"e1", b"e2"]
    headers = dict(broker.log[0].headers())
    assert (headers["ce_id"], headers["ce_source"], headers["ce_specversion"]) == (b"e0", b"/test", b"1.0")
    assert spooled(tmp_path) == []
    assert publisher.stats.spooled == publisher.stats.dropped == 0
    assert list_segments(tmp_path / "gw.journal") == []  # settled and counted at stop: retired


def test_a_failed_delivery_spools_the_event_and_the_next_start_republishes_it(broker, tmp_path):
    broker.up, broker.failing = False, True
    publisher = publisher_in(tmp_path)
    publish(publisher, range(4))
    publisher.close(timeout=1)
    assert broker.log == []
    assert sorted(spooled(tmp_path)) == sorted(event(i) for i in range(4))
    assert publisher.stats.spooled == 4
    broker.up, broker.failing = True, False
    again = publisher_in(tmp_path)  # start() replays the spool
    again.close(timeout=1)
    assert sorted(broker.values()) == sorted(event(i) for i in range(4))
    assert again.stats.replayed == 4
    assert spooled(tmp_path) == []  # the replayed file is gone once its events settled (here: at stop)


def test_a_stop_with_the_broker_silent_purges_the_queue_into_the_spool(broker, tmp_path):
    broker.up = False  # no answer and no failure report: librdkafka would keep them queued
    publisher = publisher_in(tmp_path)
    publish(publisher, range(5))
    publisher.close(timeout=0.1)
    assert sorted(spooled(tmp_path)) == sorted(event(i) for i in range(5))
    assert publisher.stats.dropped == 0


def test_a_full_local_queue_spools_at_once_and_the_request_path_never_sees_an_error(broker, tmp_path):
    broker.queue_full = True
    publisher = publisher_in(tmp_path)
    publish(publisher, range(3))  # must not raise
    assert publisher.stats.spooled == 3
    assert publisher.metrics()["aimeter_events_emitted_total"] == 3
    broker.queue_full = False
    publisher.close(timeout=1)
    assert sorted(spooled(tmp_path)) == sorted(event(i) for i in range(3))
