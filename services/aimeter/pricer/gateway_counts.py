"""Stores the gateways' reconciliation counts (``ai.counts.v1``) in ClickHouse's ``gateway_counts``.

Off the hot path: a few records per gateway every few seconds, so it uses FastStream, the house framework for
consumers off the hot path (the usage consumer uses confluent-kafka directly: the framework cost ~15% of the
pricer's CPU there). It runs on the pricer's event loop; inserts run on a thread with a ClickHouse client of
its own (a client serialises its queries, so sharing the usage writer's would hold its inserts back).

At least once, idempotent: a batch is inserted, then its offsets committed; a failed insert rewinds the batch
(FastStream's nack) after a pause, and a redelivered or re-sent count states the same cumulative total, which
``ReplacingMergeTree(emitted)`` keeps once. A record that is not a count is logged and skipped (counts have no
dead-letter topic: the next record of that gateway and hour carries the whole total again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from faststream import AckPolicy
from faststream.confluent import KafkaBroker
from faststream.message import StreamMessage

from aimeter.events import COUNTS_TOPIC
from aimeter.events.counts import CountRecordError, GatewayCount, decode_count
from aimeter.kafka_log import KafkaLog

log = logging.getLogger(__name__)
COLUMNS = ["gateway_id", "hour", "emitted", "produced_at"]
RETRY_PAUSE_S = 2.0
BATCH_MAX = 1000


def count_rows(values: Sequence[bytes]) -> tuple[list[list[Any]], int]:
    """Pure: the table rows of a batch of record values, and how many were not counts (logged)."""
    rows, bad = [], 0
    for value in values:
        try:
            count: GatewayCount = decode_count(value)
        except CountRecordError as exc:
            bad += 1
            log.error("%s: %s; skipped (the next record of that gateway and hour carries its whole total)",
                      COUNTS_TOPIC, exc)
            continue
        rows.append([count.gateway_id, count.hour, count.emitted, count.produced_at])
    return rows, bad


async def _raw_values(message: StreamMessage[Any]) -> list[bytes]:
    """The batch's record values as bytes: count records are decoded by ``events.counts``, not by FastStream."""
    return [bytes(value) for value in message.body]


class _LibrdkafkaFilter(logging.Filter):
    """FastStream hands librdkafka's log lines to the broker's logger (as ``faststream.confluent._proxy``):
    reduced here to one line when Kafka is unreachable and one when it answers (``kafka_log.KafkaLog``), as the
    project's other clients do; left alone they were an ERROR line per reconnect attempt."""

    def __init__(self, kafka_log: KafkaLog) -> None:
        super().__init__()
        self.kafka_log = kafka_log

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "faststream.confluent._proxy":
            return True
        self.kafka_log.log(record.levelno, str(record.msg), *(record.args or ()))
        return False


def counts_broker(bootstrap: str, group: str, insert: Callable[[list[list[Any]]], None]) -> KafkaBroker:
    """A FastStream broker whose one subscriber stores every count record through ``insert`` (rows as
    ``COLUMNS``); the caller starts and stops it (``await broker.start()`` / ``broker.stop()``)."""
    kafka_log = KafkaLog("gateway counts consumer", bootstrap)
    broker_log = logging.getLogger(f"{__name__}.{group}")
    for old in list(broker_log.filters):  # (a broker made again for the same group in one process: tests)
        broker_log.removeFilter(old)
    broker_log.addFilter(_LibrdkafkaFilter(kafka_log))
    broker = KafkaBroker(bootstrap, logger=broker_log, log_level=logging.DEBUG, config={"error_cb": kafka_log.error})

    @broker.subscriber(COUNTS_TOPIC, group_id=group, auto_offset_reset="earliest", batch=True,
                       max_records=BATCH_MAX, ack_policy=AckPolicy.NACK_ON_ERROR, decoder=_raw_values)
    async def store_counts(values: list[bytes]) -> None:
        kafka_log.answered()
        rows, _ = count_rows(values)
        if not rows:
            return
        try:
            await asyncio.to_thread(insert, rows)
        except Exception as exc:
            log.error("gateway_counts: cannot insert %d count records (%s); retrying in %.0f s (reconcile shows "
                      "stale counts until then)", len(rows), exc, RETRY_PAUSE_S)
            await asyncio.sleep(RETRY_PAUSE_S)
            raise  # FastStream rewinds the batch (nack): nothing is committed past an unstored count

    return broker


def clickhouse_insert(url: str) -> Callable[[list[list[Any]]], None]:
    """Inserts into ``gateway_counts`` with a client of its own, made on first use (on the insert thread)."""
    from aimeter.store.client import get_client  # noqa: PLC0415 - keep this module importable without a store

    client: list[Any] = []

    def insert(rows: list[list[Any]]) -> None:
        if not client:
            client.append(get_client(url))
        client[0].insert("gateway_counts", rows, column_names=COLUMNS)

    return insert
