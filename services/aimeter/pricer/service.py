"""The pricer process: a FastStream batch subscriber (confluent-kafka) that prices and inserts.

Delivery is at-least-once with idempotent storage: each batch is inserted into ClickHouse
first, and only then is the offset committed (FastStream's NACK_ON_ERROR policy with manual
commits). A failed insert raises, FastStream seeks back to the batch start, and the batch is
redelivered after a backoff; duplicates collapse on ``event_id``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from faststream import AckPolicy
from faststream.confluent import KafkaBroker
from faststream.message import StreamMessage

from aimeter.events import DLQ_TOPIC, USAGE_TOPIC
from aimeter.pricer.core import PriceBook
from aimeter.pricer.rows import Batch, build_batch
from aimeter.pricer.write import insert_batch

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0


async def raw_values(message: StreamMessage[Any]) -> Any:
    """Skip FastStream's JSON decoding: one malformed message must become poison, not fail the whole batch."""
    return message.body


class BatchWriter:
    """Inserts priced batches; retries with backoff by raising, which makes FastStream redeliver."""

    def __init__(self, client: Client, book: PriceBook, broker: KafkaBroker, fault_file: Path | None = None) -> None:
        self.client = client
        # Test-only switch (AIMETER_FAULT_INSERT_FAIL_FILE): while this file exists every insert fails, so the
        # fault tests can take the embedded engine "down" and prove the retry path loses and doubles nothing.
        self.fault_file = fault_file
        self.book = book
        self.broker = broker
        self.failures = 0
        self.inserted = 0
        self.lock = asyncio.Lock()

    async def handle(self, values: list[bytes]) -> None:
        batch = build_batch(values, self.book, datetime.now(UTC))
        for raw, reason in batch.poison:
            # Awaited (confirmed by the broker) before the batch's offsets can be committed.
            await self.broker.publish(raw, DLQ_TOPIC, headers={"x-aimeter-dlq-reason": reason[:1000]})
            log.error("usage message dead-lettered to %s: %s", DLQ_TOPIC, reason)
        if not batch.event_rows:
            return
        try:
            async with self.lock:
                await asyncio.to_thread(self._insert, batch)
        except Exception as exc:
            self.failures += 1
            delay = min(MAX_BACKOFF_S, 0.5 * 2 ** min(self.failures, 10))
            log.warning("ClickHouse insert of %d events failed (%s); retrying the batch in %.1f s",
                        len(batch.event_rows), exc, delay)
            await asyncio.sleep(delay)
            raise
        self.failures = 0
        self.inserted += len(batch.event_rows)

    def _insert(self, batch: Batch) -> None:
        if self.fault_file is not None and self.fault_file.exists():
            raise ConnectionError(f"ClickHouse made unavailable by the fault switch {self.fault_file}")
        insert_batch(self.client, batch)


def build_pricer(bootstrap: str, client: Client, book: PriceBook, *, group: str,
                 batch_max: int, fault_file: Path | None = None) -> tuple[KafkaBroker, BatchWriter]:
    """The broker with one batch subscriber on the usage topic, and the writer behind it."""
    broker = KafkaBroker(bootstrap, client_id="aimeter-pricer", logger=log)
    writer = BatchWriter(client, book, broker, fault_file)

    @broker.subscriber(USAGE_TOPIC, group_id=group, batch=True, max_records=batch_max,
                       auto_offset_reset="earliest", ack_policy=AckPolicy.NACK_ON_ERROR, decoder=raw_values)
    async def on_usage(values: list[bytes]) -> None:
        await writer.handle(values)

    return broker, writer
