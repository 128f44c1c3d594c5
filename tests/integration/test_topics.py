"""The topics as a real broker holds them: the usage log and its dead letters partitioned, the keys and
counts topics compacted (their latest record per key is state: age-based deletion would forget a revocation)."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from aimeter import kafka_admin
from aimeter.events import COUNTS_TOPIC, DLQ_TOPIC, KEYS_TOPIC, USAGE_TOPIC
from aimeter.kafka_admin import ensure_topics, ensure_topics_in_background

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


def test_partitions_and_replication_factor_are_the_callers(kafka_bootstrap: str, monkeypatch, caplog) -> None:
    """AIMETER_TOPIC_PARTITIONS / _REPLICATION_FACTOR reach the broker through the gateway's and pricer's background
    creation. Fresh topic names (the session's broker already holds the real ones): a replication factor the
    one-broker cluster cannot meet is refused, by the broker, with the topic named in the log."""
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setattr(kafka_admin, "LOG_TOPICS", (f"usage-{suffix}", f"dlq-{suffix}"))
    monkeypatch.setattr(kafka_admin, "COMPACTED_TOPICS", (f"counts-{suffix}",))
    ensure_topics_in_background(kafka_bootstrap, "test", partitions=3, replication_factor=1).join(60)
    admin, deadline = AdminClient({"bootstrap.servers": kafka_bootstrap}), time.monotonic() + 20
    while True:  # a created topic reaches the metadata a moment later
        topics = admin.list_topics(timeout=10).topics
        if {f"usage-{suffix}", f"dlq-{suffix}", f"counts-{suffix}"} <= set(topics) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {len(topics[t].partitions) for t in (f"usage-{suffix}", f"dlq-{suffix}")} == {3}
    assert len(topics[f"counts-{suffix}"].partitions) == 1
    monkeypatch.setattr(kafka_admin, "LOG_TOPICS", (f"usage-rf-{suffix}",))
    with pytest.raises(RuntimeError, match=f"usage-rf-{suffix}.*[Rr]eplication"):
        ensure_topics(kafka_bootstrap, 3, replication_factor=2)
