"""Publishes usage events to Kafka off the request path; what Kafka refuses goes to the spool.

``produce()`` only enqueues into librdkafka (~5 µs); batching, retries and delivery reports run
in librdkafka's threads and one poll thread of ours, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import KafkaError, Message, Producer

from aimeter.events import USAGE_TOPIC, UsageEvent, cloudevent_headers
from aimeter.gateway.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    produced: int = 0
    delivered: int = 0
    spooled: int = 0
    dropped: int = 0


def encode_event(event: UsageEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


class KafkaPublisher:
    def __init__(self, bootstrap: str, spool_path: Path, source: str, topic: str = USAGE_TOPIC) -> None:
        self.topic = topic
        self.source = source
        self.spool = Spool(spool_path)
        self.stats = PublisherStats()
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # broker-side dedup of producer retries
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 30_000,  # then the delivery report fails and the event is spooled
            "queue.buffering.max.messages": 200_000,
        })
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)

    def start(self) -> None:
        self._poller.start()
        self.replay_spool()

    def publish(self, event: UsageEvent) -> None:
        """Enqueue one event. Never raises: a full local queue spools instead."""
        payload = encode_event(event)
        self._produce(payload, str(event.event_id), event.ended_at.isoformat())

    def _produce(self, payload: bytes, event_id: str, time_iso: str) -> None:
        headers = cloudevent_headers(event_id, self.source, time_iso)
        try:
            self._producer.produce(self.topic, payload, key=event_id.encode(), headers=headers,
                                   on_delivery=self._on_delivery)
            self.stats.produced += 1
        except BufferError:
            self._to_spool(payload, "local producer queue full")
        except Exception as exc:  # noqa: BLE001 - metering must never break the proxy
            self._to_spool(payload, f"produce failed: {exc}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        self._to_spool(msg.value() or b"", f"delivery failed: {err}")

    def _to_spool(self, payload: bytes, why: str) -> None:
        if self.spool.append(payload):
            self.stats.spooled += 1
            log.warning("usage event spooled to %s (%s)", self.spool.path, why)
        else:
            self.stats.dropped += 1
            log.error("usage event DROPPED: spool %s is full (%s)", self.spool.path, why)

    def replay_spool(self) -> int:
        """Re-publish spooled events (at start, and when Kafka is back); returns how many were re-sent."""
        count = 0
        for line in self.spool.take():
            try:
                event = UsageEvent.model_validate_json(line)
            except ValueError:
                log.error("unreadable spooled event kept out of Kafka: %r", line[:200])
                continue
            self._produce(line, str(event.event_id), event.ended_at.isoformat())
            count += 1
        if count:
            log.info("re-published %d spooled usage events", count)
        return count

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.2)

    def close(self, timeout: float = 10.0) -> None:
        """Flush; anything still undelivered after ``timeout`` is purged into the spool, not lost."""
        remaining = self._producer.flush(timeout)
        if remaining:
            self._producer.purge()
            self._producer.flush(1.0)  # serves the purge delivery reports, which spool the events
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(timeout=2)
