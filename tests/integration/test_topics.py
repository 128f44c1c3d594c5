"""The topics as a real broker holds them: the usage log and its dead letters partitioned, the keys and
counts topics compacted (their latest record per key is state: age-based deletion would forget a revocation)."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from aimeter.events import COUNTS_TOPIC, DLQ_TOPIC, KEYS_TOPIC, USAGE_TOPIC
from aimeter.kafka_admin import ensure_topics

pytestmark = pytest.mark.integration


def test_state_topics_are_compacted_and_logs_are_not(kafka_bootstrap: str) -> None:
    ensure_topics(kafka_bootstrap)
    assert ensure_topics(kafka_bootstrap) == []  # a second call creates nothing
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    resources = [ConfigResource("topic", t) for t in (USAGE_TOPIC, DLQ_TOPIC, KEYS_TOPIC, COUNTS_TOPIC)]
    policy = {r.name: f.result(10)["cleanup.policy"].value for r, f in admin.describe_configs(resources).items()}
    assert policy == {USAGE_TOPIC: "delete", DLQ_TOPIC: "delete", KEYS_TOPIC: "compact", COUNTS_TOPIC: "compact"}
    assert len(topics[KEYS_TOPIC].partitions) == len(topics[COUNTS_TOPIC].partitions) == 1
    assert len(topics[USAGE_TOPIC].partitions) >= 1
