"""Creating the project's topics up front, so consumers never race topic auto-creation.

The usage and dead-letter topics are plain logs (deleted by the broker's retention); the keys and counts
topics are compacted: each holds state, the latest record per key, and must never age out.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from aimeter.events import COUNTS_TOPIC, DLQ_TOPIC, KEYS_TOPIC, USAGE_TOPIC
from aimeter.kafka_log import quiet_client

log = logging.getLogger(__name__)


LOG_TOPICS = (USAGE_TOPIC, DLQ_TOPIC)
COMPACTED_TOPICS = (KEYS_TOPIC, COUNTS_TOPIC)
# Compacted state is small and read from the start by every gateway/pricer: one partition keeps it ordered.
_COMPACTED_CONFIG = {"cleanup.policy": "compact"}


def ensure_topics(bootstrap: str, partitions: int = 4, timeout: float = 30.0,
                  replication_factor: int = -1) -> list[str]:
    """Create missing topics; an existing topic is left as it is (partition count is the operator's call).
    ``replication_factor`` -1 takes the broker's default. Returns the topics this call created.

    On a cluster: replication factor 3 and the topics' (or broker's) ``min.insync.replicas`` 2. The producers
    send with ``acks=all``, so a write is acknowledged once 2 of the 3 replicas hold it and one broker may fail
    without losing or refusing anything. With fewer in-sync replicas than that the broker refuses writes
    (NOT_ENOUGH_REPLICAS): the gateway's producer retries until its delivery timeout, then spools to disk,
    and its journal holds every event meanwhile; nothing is acknowledged that only one broker has."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **quiet_client(bootstrap)})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=replication_factor)
              for t in LOG_TOPICS if t not in existing]
    wanted += [NewTopic(t, num_partitions=1, replication_factor=replication_factor, config=dict(_COMPACTED_CONFIG))
               for t in COMPACTED_TOPICS if t not in existing]
    if not wanted:
        return []
    created = []
    for topic, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RuntimeError(f"could not create Kafka topic {topic} on {bootstrap}: {exc}") from exc
        else:
            created.append(topic)
    return created


def ensure_topics_in_background(bootstrap: str, who: str, *, partitions: int = 4, replication_factor: int = -1,
                                retry_max_s: float = 10.0) -> threading.Thread:
    """Create the topics once Kafka answers, retrying with backoff; a process never waits for it to start.

    An unreachable cluster is the client's log line to give (kafka_log.py), so it is not repeated here;
    a refusal (e.g. no permission) is logged once, and so are the topics this process created.
    """
    def run() -> None:
        delay, refused = 1.0, ""
        while True:
            try:
                created = ensure_topics(bootstrap, partitions, timeout=10.0, replication_factor=replication_factor)
            except KafkaException:  # no answer: retry quietly
                pass
            except Exception as exc:  # noqa: BLE001 - a refusal or a fault of ours: said once, never a dead thread
                if str(exc) != refused:
                    refused = str(exc)
                    log.warning("%s: %s; retrying in the background", who, exc)
            else:
                if created:
                    log.info("%s: created Kafka topics %s", who, ", ".join(created))
                return
            time.sleep(delay)
            delay = min(retry_max_s, delay * 2)

    thread = threading.Thread(target=run, name="ensure-topics", daemon=True)
    thread.start()
    return thread
