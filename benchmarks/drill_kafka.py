"""What the drill asks Kafka itself: group assignments, partition leaders, topic settings, a key's revocation stamp."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from aimeter.events import KEYS_TOPIC, USAGE_TOPIC
from aimeter.kafka_log import quiet_client


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **quiet_client(bootstrap, "drill-admin")})


def group_assignment(bootstrap: str, group: str) -> list[int]:
    """Partitions of the usage topic each member of ``group`` holds (an empty list when it does not answer)."""
    admin = _admin(bootstrap)
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
    except Exception:  # noqa: BLE001 - mid-rebalance or a node down: ask again
        return []
    return sorted(sum(1 for tp in m.assignment.topic_partitions if tp.topic == USAGE_TOPIC) for m in desc.members)


def busiest_leader(bootstrap: str) -> int:
    """The node id leading the most partitions of the usage topic: killing it forces leader elections."""
    meta = _admin(bootstrap).list_topics(USAGE_TOPIC, timeout=10)
    leaders = Counter(p.leader for p in meta.topics[USAGE_TOPIC].partitions.values())
    return leaders.most_common(1)[0][0]


def topic_settings(bootstrap: str, topic: str = USAGE_TOPIC) -> dict[str, object]:
    """Partitions, replicas per partition and min.insync.replicas of ``topic``, as the cluster reports them."""
    admin = _admin(bootstrap)
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    for attempt in range(20):  # a topic just created may be unknown to the node asked for a moment
        try:
            config = admin.describe_configs([resource])[resource].result(timeout=10)
            break
        except KafkaException:
            if attempt == 19:
                raise
            time.sleep(0.5)
    return {"partitions": len(partitions), "replicas": sorted({len(p.replicas) for p in partitions.values()}),
            "min.insync.replicas": config["min.insync.replicas"].value}


def revoked_at(bootstrap: str, key_id: str, key_file: Path) -> float:
    """The key's ``revoked_at`` (Unix time) from the keys topic, or from the key file where the build keeps keys
    there."""
    stamps = [json.loads(v).get("revoked_at", "") for v in _topic_values(bootstrap, key_id)]
    if not any(stamps) and key_file.is_file():
        stamps = [r["revoked_at"] for r in json.loads(key_file.read_text())["keys"] if r["key_id"] == key_id]
    if not stamps or not stamps[-1]:
        raise RuntimeError(f"key {key_id} shows no revocation in {KEYS_TOPIC} or {key_file}")
    return datetime.fromisoformat(stamps[-1]).timestamp()


def _topic_values(bootstrap: str, key_id: str) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "drill-keys-reader", "enable.auto.commit": False,
                         **quiet_client(bootstrap, "drill-keys")})
    try:
        part = TopicPartition(KEYS_TOPIC, 0)
        _, end = consumer.get_watermark_offsets(part, timeout=10)
        consumer.assign([TopicPartition(KEYS_TOPIC, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 20
        position = 0
        while position < end and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            position = (msg.offset() or 0) + 1
            value = msg.value()
            if msg.key() == key_id.encode() and value:
                values.append(value)
        return values
    finally:
        consumer.close()


