"""What the drill asks Kafka itself: group assignments, partition leaders, topic settings."""

from __future__ import annotations

import time
from collections import Counter

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from aimeter.events import USAGE_TOPIC
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
