"""Reconciliation counts through Kafka, piece by piece (issue 21): the record, the journal's incremental count,
the publisher's cumulative sends (against the in-memory producer, tests/support/fake_kafka.py), the pricer's
FastStream subscriber (FastStream's TestKafkaBroker), reconcile's pure sums, and the default gateway id.
Real-broker tests: tests/integration/test_gateway_counts.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from faststream.confluent import TestKafkaBroker

from aimeter.events import COUNTS_TOPIC
from aimeter.events.counts import CountRecordError, decode_count, encode_count
from aimeter.gateway import publisher as publisher_module
from aimeter.gateway.journal import SegmentCounts
from aimeter.gateway.publisher import KafkaPublisher
from aimeter.pricer import gateway_counts
from aimeter.reports.reconcile import emitted_counts, gateway_totals
from aimeter.settings import Settings
from tests.support.fake_kafka import ProducerBroker

AT = datetime(2026, 12, 6, 19, 36, tzinfo=UTC)
HOUR = "2026-12-06T19:00Z"


def event(i: int, hour: int = 19) -> bytes:
    return (b'{"schema_version":1,"event_id":"e%d","gateway_id":"gw","started_at":"2026-12-06T%02d:36:22.1Z",'
            b'"ended_at":"2026-12-06T%02d:36:22.2Z"}' % (i, hour, hour))


# --- the record -----------------------------------------------------------------------------------------
def test_a_count_record_round_trips_and_is_keyed_by_gateway_and_hour() -> None:
    key, value = encode_count("gw-a", HOUR, 7, AT)
    assert key == b"gw-a|2026-12-06T19:00Z"
    count = decode_count(value)
    assert (count.gateway_id, count.hour, count.emitted, count.produced_at) == (
        "gw-a", datetime(2026, 12, 6, 19, tzinfo=UTC), 7, AT)


@pytest.mark.parametrize("value", [
    b"junk", b"{}", b'{"gateway_id":"gw","hour":"2026-12-06T19:00Z","emitted":-1,"produced_at":"2026-12-06T19:00Z"}',
    b'{"gateway_id":"gw","hour":"2026-12-06T19:30Z","emitted":1,"produced_at":"2026-12-06T19:00Z"}',
    b'{"gateway_id":"","hour":"2026-12-06T19:00Z","emitted":1,"produced_at":"2026-12-06T19:00Z"}',
    b'{"gateway_id":"gw","hour":"2026-12-06T19:00Z","emitted":"3","produced_at":"2026-12-06T19:00Z"}',
    b'{"gateway_id":"gw","hour":"2026-12-06T19:00Z","emitted":true,"produced_at":"2026-12-06T19:00Z"}',
])
def test_a_record_that_is_not_a_count_is_refused_with_its_bytes(value: bytes) -> None:
    with pytest.raises(CountRecordError, match="count record"):
        decode_count(value)


# --- the journal's incremental count --------------------------------------------------------------------
def test_segment_counts_read_only_complete_lines_and_go_on_from_there(tmp_path: Path) -> None:
    path = tmp_path / "000000000001.seg"
    path.write_bytes(event(1) + b"\n" + event(2, hour=20)[:30] + b"\0" * 100)  # the second line half written
    counted = SegmentCounts(path)
    assert counted.advance() == {HOUR: 1}
    with path.open("r+b") as fh:
        fh.seek(len(event(1)) + 1)
        fh.write(event(2, hour=20) + b"\n" + event(3) + b"\n")
    assert counted.advance() == {HOUR: 2, "2026-12-06T20:00Z": 1}
    assert counted.advance() == {HOUR: 2, "2026-12-06T20:00Z": 1}  # nothing new: nothing added
    path.unlink()
    assert counted.advance() == {HOUR: 2, "2026-12-06T20:00Z": 1}  # retired meanwhile: what it had


# --- the publisher's sends ------------------------------------------------------------------------------
@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> ProducerBroker:
    fake = ProducerBroker()
    monkeypatch.setattr(publisher_module, "Producer", fake.producer)
    monkeypatch.setattr(publisher_module, "COUNTS_EVERY_S", 1e9)  # the test sends; the poll thread never does
    return fake


def publisher_in(tmp_path: Path) -> KafkaPublisher:
    made = KafkaPublisher("fake:9092", tmp_path / "gw.jsonl", "/test", counts_path=tmp_path / "counts.json",
                          journal_dir=tmp_path / "gw.journal", delivery_timeout_s=60, gateway_id="gw-a")
    made.start()
    return made


def sent_counts(broker: ProducerBroker) -> list[tuple[bytes | None, int]]:
    return [(m.key(), orjson.loads(m.value() or b"")["emitted"]) for m in broker.other if m.topic() == COUNTS_TOPIC]


def test_the_publisher_sends_cumulative_counts_only_when_they_change_and_once_more_at_stop(broker, tmp_path):
    publisher = publisher_in(tmp_path)
    for i in range(3):
        publisher.publish_encoded(event(i), f"e{i}", AT, AT)
    assert publisher.send_counts() == 1  # read from the current segment: no roll, no fold needed
    assert publisher.send_counts() == 0  # unchanged: nothing sent
    publisher.publish_encoded(event(3), "e3", AT, AT)
    publisher.send_counts()
    publisher._producer.poll(0)  # deliver (the poll thread does it in the gateway)
    assert sent_counts(broker) == [(b"gw-a|" + HOUR.encode(), 3), (b"gw-a|" + HOUR.encode(), 4)]
    publisher.publish_encoded(event(4), "e4", AT, AT)
    publisher.close(timeout=1)
    assert sent_counts(broker)[-1] == (b"gw-a|" + HOUR.encode(), 5)


def test_a_refused_count_is_sent_again_and_a_restart_states_the_same_totals(broker, tmp_path):
    broker.up, broker.failing = False, True
    publisher = publisher_in(tmp_path)
    for i in range(4):
        publisher.publish_encoded(event(i), f"e{i}", AT, AT)
    assert publisher.send_counts() == 1
    publisher._producer.poll(0)  # the failure report
    broker.up, broker.failing = True, False
    assert publisher.send_counts() == 1  # refused: forgotten, so sent again
    publisher._producer.poll(0)
    assert sent_counts(broker) == [(b"gw-a|" + HOUR.encode(), 4)]
    publisher._stop.set()  # a crash: no stop, the journal's segment stays on disk
    again = publisher_in(tmp_path)  # replays the journal (re-publishes its events) and counts them once
    again.publish_encoded(event(9), "e9", AT, AT)
    again.close(timeout=1)
    assert sent_counts(broker)[-1] == (b"gw-a|" + HOUR.encode(), 5)
    third = publisher_in(tmp_path)  # after a clean stop: folded into the counts file, the same total again
    third.close(timeout=1)
    assert sent_counts(broker)[-1] == (b"gw-a|" + HOUR.encode(), 5)


# --- the pricer's FastStream subscriber -----------------------------------------------------------------
def test_the_counts_subscriber_stores_counts_and_skips_records_that_are_not() -> None:
    stored: list[list[Any]] = []

    async def run() -> None:
        broker = gateway_counts.counts_broker("127.0.0.1:1", "counts", stored.extend)
        async with TestKafkaBroker(broker) as test:
            _, value = encode_count("gw-a", HOUR, 3, AT)
            await test.publish_batch(value, b"junk", encode_count("gw-b", HOUR, 2, AT)[1], topic=COUNTS_TOPIC)

    asyncio.run(run())
    hour = datetime(2026, 12, 6, 19, tzinfo=UTC)
    assert stored == [["gw-a", hour, 3, AT], ["gw-b", hour, 2, AT]]


def test_a_failed_insert_fails_the_batch_so_it_is_not_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_counts, "RETRY_PAUSE_S", 0.0)

    def insert(rows: list[list[Any]]) -> None:
        raise ConnectionError("ClickHouse away")

    async def run() -> None:
        broker = gateway_counts.counts_broker("127.0.0.1:1", "counts", insert)
        async with TestKafkaBroker(broker) as test:
            await test.publish_batch(encode_count("gw-a", HOUR, 3, AT)[1], topic=COUNTS_TOPIC)

    with pytest.raises(ConnectionError):
        asyncio.run(run())


# --- reconcile's sums, and the default gateway id -------------------------------------------------------
def test_reconcile_sums_gateways_per_hour_and_names_each() -> None:
    rows = [("gw-a", HOUR, 3, AT), ("gw-b", HOUR, 2, AT), ("gw-a", "2026-12-06T20:00Z", 1, AT.replace(hour=20))]
    assert emitted_counts(rows) == {HOUR: 5, "2026-12-06T20:00Z": 1}
    totals = gateway_totals(rows)
    assert [(t.gateway_id, t.hours, t.emitted, t.last_report) for t in totals] == [
        ("gw-a", 2, 4, AT.replace(hour=20)), ("gw-b", 1, 2, AT)]


def test_the_default_gateway_id_is_stable_per_data_dir_and_unique_across_them(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert Settings(data_dir=one).gateway_id == Settings(data_dir=one).gateway_id
    assert Settings(data_dir=one).gateway_id != Settings(data_dir=two).gateway_id
    assert Settings(data_dir=one, gateway_id="gw-7").gateway_id == "gw-7"
