"""The durable record of fired alerts: a compacted Kafka topic, one record per alert key.

Kafka rather than ClickHouse because in embedded mode only the pricer may write to chDB (the query endpoint
is read-only), and the alerts consumer already talks to Kafka. Compaction keeps the latest record per key, so
the topic stays as small as the number of alerts ever fired. It is read from the start to its end when the
consumer starts (:func:`read_fired`); a record is written, acknowledged by the brokers, only after the webhook
answered 2xx (:mod:`aimeter.alerts.app`).
"""

from __future__ import annotations

import json
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from aimeter.alerts.rules import Alert
from aimeter.kafka_log import quiet_client

ALERTS_TOPIC = "ai.alerts.v1"


class FiredLogError(RuntimeError):
    """The fired-alert log could not be read; starting without it could post alerts a second time."""


def ensure_alerts_topic(bootstrap: str, timeout: float = 30.0) -> bool:
    """Create the compacted topic (one partition: a small, ordered log) unless it exists. True if created."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **quiet_client(bootstrap, "aimeter-alerts")})
    if ALERTS_TOPIC in admin.list_topics(timeout=timeout).topics:
        return False
    topic = NewTopic(ALERTS_TOPIC, num_partitions=1, replication_factor=-1, config={"cleanup.policy": "compact"})
    try:
        admin.create_topics([topic], request_timeout=timeout)[ALERTS_TOPIC].result(timeout)
    except KafkaException as exc:
        if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
            raise FiredLogError(f"could not create Kafka topic {ALERTS_TOPIC} on {bootstrap}: {exc}") from exc
        return False
    return True


def record(alert: Alert) -> bytes:
    """The log record of a delivered alert: its key and payload (what was posted)."""
    return json.dumps({"key": alert.key, "kind": alert.kind, "payload": alert.payload()}).encode()


def _ends(consumer: Consumer, bootstrap: str, timeout: float) -> tuple[int, int]:
    """The log's first and next offsets, asking again while the brokers are still electing its leader (a topic
    created a moment ago answers NOT_LEADER_FOR_PARTITION at once, not after the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(ALERTS_TOPIC, 0), timeout=timeout)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise FiredLogError(f"Kafka at {bootstrap} did not give the end of {ALERTS_TOPIC} within "
                                    f"{timeout:.0f} s ({exc}); not starting, so no alert is posted twice") from None
            time.sleep(0.5)
        else:
            return int(low), int(high)


def read_fired(bootstrap: str, timeout: float = 30.0) -> set[str]:
    """Every alert key in the log, read from its beginning to the end it had when asked."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "aimeter-alerts-log", "enable.auto.commit": False,
                         **quiet_client(bootstrap, "aimeter-alerts")})
    try:
        low, high = _ends(consumer, bootstrap, timeout)
        keys: set[str] = set()
        if high <= low:
            return keys
        consumer.assign([TopicPartition(ALERTS_TOPIC, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            key = msg.key()
            if key:
                keys.add(key.decode() if isinstance(key, bytes) else key)
            if (msg.offset() or 0) + 1 >= high:
                return keys
        raise FiredLogError(f"{ALERTS_TOPIC} at {bootstrap} was not read to its end (offset {high}) within "
                            f"{timeout:.0f} s; not starting, so no alert is posted twice")
    finally:
        consumer.close()
