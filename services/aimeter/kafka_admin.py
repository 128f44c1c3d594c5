"""Creating the usage and dead-letter topics up front, so consumers never race topic auto-creation."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from aimeter.events import DLQ_TOPIC, USAGE_TOPIC


def ensure_topics(bootstrap: str, partitions: int = 4, timeout: float = 30.0) -> None:
    """Create missing topics; an existing topic is left as it is (partition count is the operator's call)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=-1)
              for t in (USAGE_TOPIC, DLQ_TOPIC) if t not in existing]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RuntimeError(f"could not create Kafka topic {topic} on {bootstrap}: {exc}") from exc
