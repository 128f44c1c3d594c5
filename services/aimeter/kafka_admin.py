"""Creating the usage and dead-letter topics up front, so consumers never race topic auto-creation."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from aimeter.events import DLQ_TOPIC, USAGE_TOPIC
from aimeter.kafka_log import quiet_client

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, partitions: int = 4, timeout: float = 30.0) -> None:
    """Create missing topics; an existing topic is left as it is (partition count is the operator's call)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **quiet_client(bootstrap)})
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


def ensure_topics_in_background(bootstrap: str, who: str, *, retry_max_s: float = 10.0) -> threading.Thread:
    """Create the topics once Kafka answers, retrying with backoff; a process never waits for it to start.

    Logs one line while the cluster does not answer and one when the topics exist.
    """
    def run() -> None:
        delay, failures = 1.0, 0
        while True:
            try:
                ensure_topics(bootstrap, timeout=10.0)
            except (KafkaException, RuntimeError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("%s: cannot create the Kafka topics yet (%s); retrying in the background", who, exc)
                time.sleep(delay)
                delay = min(retry_max_s, delay * 2)
                continue
            if failures:
                log.warning("%s: Kafka topics ready after %d failed attempts", who, failures)
            return

    thread = threading.Thread(target=run, name="ensure-topics", daemon=True)
    thread.start()
    return thread
