"""Reconciliation counts through real Kafka into ClickHouse (issue 21): gateways' publishers send their per-hour
counts to ai.counts.v1, the pricer's FastStream consumer (pricer/gateway_counts.py) stores them in
gateway_counts on the session's chDB engine, and reconcile's SQL compares them with the stored events.

Each test uses its own gateway ids and its own hour (far in the future), so the session's other rows never meet
its reconcile window. The whole pricer-and-gateway processes path runs in test_faults.py
(test_reconcile_matches_after_an_outage_and_catches_a_gap)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from aimeter.config import parse_config
from aimeter.events import COUNTS_TOPIC, UsageEvent
from aimeter.events.counts import encode_count
from aimeter.gateway.publisher import KafkaPublisher, encode_event
from aimeter.kafka_admin import ensure_topics
from aimeter.pricer.gateway_counts import clickhouse_insert, counts_broker
from aimeter.pricer.pricebook import PriceBook
from aimeter.reports.reconcile import (
    COUNTS_SQL,
    RECONCILE_SQL,
    GatewayTotal,
    HourCheck,
    compare,
    emitted_counts,
    gateway_totals,
)
from tests.integration.chdb_fixture import ingest

pytestmark = pytest.mark.integration
BOOK = PriceBook(parse_config("""
backends:
  openai-counts: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
models:
  gpt-4o-mini: {backend: openai-counts}
"""))


@pytest.fixture(scope="module")
def counts_consumer(kafka_bootstrap: str, metering_store: Client, chdb_path: Path) -> Iterator[None]:
    """The pricer's counts consumer on a real broker, on an event loop of its own (as in the pricer process)."""
    ensure_topics(kafka_bootstrap)
    broker = counts_broker(kafka_bootstrap, f"counts-test-{uuid.uuid4().hex[:8]}",
                           clickhouse_insert(f"chdb://{chdb_path}"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(60)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def own_hour() -> datetime:
    """An hour no other test writes: the reconcile window holds this test's rows only."""
    return datetime(2035, 1, 1, tzinfo=UTC) + timedelta(hours=uuid.uuid4().int % 200_000)


def events_at(hour: datetime, n: int) -> list[UsageEvent]:
    return [UsageEvent(event_id=uuid.uuid4(), started_at=hour + timedelta(minutes=i % 60, seconds=1),
                       ended_at=hour + timedelta(minutes=i % 60, seconds=2), api="openai.chat",
                       backend="openai-counts", provider="openai", deployment="proprietary",
                       model_requested="gpt-4o-mini", status="ok", http_status=200, usage_source="reported",
                       usage={"input_tokens": 10, "output_tokens": 1}, attribution={"team": "counts-test"})
            for i in range(n)]


def gateway(tmp_path: Path, bootstrap: str, name: str) -> KafkaPublisher:
    spool = tmp_path / name / "spool"
    made = KafkaPublisher(bootstrap, spool / f"{name}.jsonl", f"/aimeter/gateway/{name}",
                          counts_path=tmp_path / name / "counts" / f"{name}.json",
                          journal_dir=spool / f"{name}.journal", delivery_timeout_s=10.0, gateway_id=name)
    made.start()
    return made


def publish(publisher: KafkaPublisher, events: list[UsageEvent]) -> None:
    for e in events:
        publisher.publish_encoded(encode_event(e), str(e.event_id), e.started_at, e.ended_at)


def reconcile(client: Client, since: datetime, until: datetime) -> tuple[list[HourCheck], list[GatewayTotal]]:
    """What `aimeter reconcile` computes, on the session's engine."""
    window = {"since": since, "until": until}
    stored = {r[0]: tuple(r[1:]) for r in client.query(RECONCILE_SQL, parameters=window).result_rows}
    counted = client.query(COUNTS_SQL, parameters=window).result_rows
    return compare(emitted_counts(counted), stored, since, until), gateway_totals(counted)


def wait_counts(client: Client, gateways: list[str], total: int, timeout: float = 60.0) -> int:
    sql = "SELECT sum(emitted) FROM gateway_counts FINAL WHERE has({g:Array(String)}, gateway_id)"
    deadline = time.monotonic() + timeout
    while True:
        got = int(client.query(sql, parameters={"g": gateways}).result_rows[0][0] or 0)
        if got == total or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_two_gateways_counts_through_kafka_reconcile_exactly(counts_consumer, metering_store, kafka_bootstrap,
                                                             tmp_path):
    hour = own_hour()
    a, b = f"gw-a-{uuid.uuid4().hex[:6]}", f"gw-b-{uuid.uuid4().hex[:6]}"
    first, second, later = events_at(hour, 7), events_at(hour, 4), events_at(hour + timedelta(hours=1), 2)
    gw_a, gw_b = gateway(tmp_path, kafka_bootstrap, a), gateway(tmp_path, kafka_bootstrap, b)
    publish(gw_a, first)
    publish(gw_b, second + later)
    gw_a.close()
    gw_b.close()
    assert wait_counts(metering_store, [a, b], 13) == 13
    until = hour + timedelta(hours=2)
    ingest(metering_store, first + second + later[:1], BOOK)
    checks, _ = reconcile(metering_store, hour, until)
    assert [(c.hour, c.emitted, c.stored, c.verdict) for c in checks] == [
        (hour.strftime("%Y-%m-%dT%H:00Z"), 11, 11, "ok"),
        ((hour + timedelta(hours=1)).strftime("%Y-%m-%dT%H:00Z"), 2, 1, "GAP")]  # one event not stored yet
    ingest(metering_store, later[1:], BOOK)
    checks, totals = reconcile(metering_store, hour, until)
    assert [c.verdict for c in checks] == ["ok", "ok"]
    assert [(t.gateway_id, t.hours, t.emitted) for t in totals] == sorted([(a, 1, 7), (b, 2, 6)])


def test_a_resent_or_stale_count_record_never_adds(counts_consumer, metering_store, kafka_bootstrap):
    hour = own_hour()
    name, label = f"gw-r-{uuid.uuid4().hex[:6]}", hour.strftime("%Y-%m-%dT%H:00Z")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    for emitted in (3, 3, 2):  # the same total twice (a re-send), then an older, lower one (a replayed record)
        key, value = encode_count(name, label, emitted, datetime.now(UTC))
        producer.produce(COUNTS_TOPIC, value, key=key)
    assert producer.flush(30) == 0
    ingest(metering_store, events_at(hour, 3), BOOK)
    time.sleep(3)  # all three records stored by now (wait_counts below also waits for them)
    assert wait_counts(metering_store, [name], 3) == 3
    checks, totals = reconcile(metering_store, hour, hour + timedelta(hours=1))
    assert [(c.emitted, c.stored, c.verdict) for c in checks] == [(3, 3, "ok")]
    assert [(t.gateway_id, t.emitted) for t in totals] == [(name, 3)]


def test_a_gateway_restart_replaying_its_journal_keeps_its_count(counts_consumer, metering_store, kafka_bootstrap,
                                                                 tmp_path):
    hour = own_hour()
    name = f"gw-c-{uuid.uuid4().hex[:6]}"
    before, after = events_at(hour, 5), events_at(hour, 3)
    crashed = gateway(tmp_path, kafka_bootstrap, name)
    publish(crashed, before)
    assert wait_counts(metering_store, [name], 5) == 5  # sent while running, not only at stop
    crashed._stop.set()  # a crash: no stop, the journal stays on disk
    crashed._poller.join(5)
    restarted = gateway(tmp_path, kafka_bootstrap, name)  # replays the 5 journaled events (duplicates in Kafka)
    assert restarted.stats.replayed == 5
    publish(restarted, after)
    restarted.close()
    assert wait_counts(metering_store, [name], 8) == 8
    time.sleep(3)  # a wrong, higher count would have landed by now
    assert wait_counts(metering_store, [name], 8, timeout=0) == 8
    ingest(metering_store, before + after + before, BOOK)  # the replayed duplicates collapse on event_id
    checks, _ = reconcile(metering_store, hour, hour + timedelta(hours=1))
    assert [(c.emitted, c.stored, c.verdict) for c in checks] == [(8, 8, "ok")]
