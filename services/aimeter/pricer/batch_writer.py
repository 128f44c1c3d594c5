"""What the pricer does with one batch of usage messages: price, dead-letter the poison, insert.

Delivery is at-least-once with idempotent storage: :class:`BatchWriter.write` returns only once
the batch is in ClickHouse and its poison is confirmed on the dead-letter topic, and only then
does the consumer loop (:mod:`aimeter.pricer.consumer`) commit the offsets. Any failure raises;
the loop seeks back and redelivers the same batch after a backoff, and duplicates collapse on
``event_id`` (plus the per-batch insert deduplication token).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaError, Message, Producer

from aimeter.events import DLQ_TOPIC
from aimeter.kafka_log import quiet_client
from aimeter.pricer.alerts import NotPricedLog
from aimeter.pricer.metrics import PricerMetrics
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rows import Batch, build_batch
from aimeter.pricer.write import insert_batch

log = logging.getLogger(__name__)
DLQ_REASON_HEADER = "x-aimeter-dlq-reason"


class DeadLetterError(RuntimeError):
    """A poison message could not be confirmed on the dead-letter topic; the batch must not be committed."""


class DeadLetters:
    """A producer for the dead-letter topic that waits for the broker's confirmation of every message."""

    def __init__(self, bootstrap: str, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.producer = Producer({"bootstrap.servers": bootstrap, "client.id": "aimeter-pricer-dlq",
                                  "enable.idempotence": True, "acks": "all",
                                  "message.timeout.ms": int(timeout_s * 1000),
                                  **quiet_client(bootstrap, "pricer-dlq")})

    def send(self, poison: list[tuple[bytes, str]]) -> None:
        failed: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(str(err))

        for raw, reason in poison:
            self.producer.produce(DLQ_TOPIC, raw, headers={DLQ_REASON_HEADER: reason[:1000].encode()},
                                  on_delivery=on_delivery)
        left = self.producer.flush(self.timeout_s + 5)
        if failed or left:
            raise DeadLetterError(f"{len(failed) + left} of {len(poison)} dead letters not confirmed by "
                                  f"{DLQ_TOPIC}: {failed[:1] or 'flush timed out'}")

    def close(self) -> None:
        self.producer.flush(5)


class BatchWriter:
    """Prices a batch and writes it; raises on any failure so the caller redelivers the whole batch."""

    def __init__(self, client: Client, book: PriceBook, dead_letters: Callable[[list[tuple[bytes, str]]], None],
                 fault_file: Path | None = None, metrics: PricerMetrics | None = None) -> None:
        self.client = client
        self.book = book
        self.dead_letters = dead_letters
        # Test-only switch (AIMETER_FAULT_INSERT_FAIL_FILE): while this file exists every insert fails, so the
        # fault tests can take the embedded engine "down" and prove the retry path loses and doubles nothing.
        self.fault_file = fault_file
        self.inserted = 0
        self.not_priced = NotPricedLog()  # unpriced and unmetered rows, once per model per hour
        self.metrics = metrics

    def write(self, values: list[bytes]) -> int:
        """Returns how many events were inserted (poison excluded)."""
        batch = build_batch(values, self.book, datetime.now(UTC))
        self.not_priced.note_batch(batch.events, batch.charges)
        if batch.poison:
            self.dead_letters(batch.poison)
            if self.metrics is not None:
                self.metrics.dead_lettered.inc(len(batch.poison))
            for _raw, reason in batch.poison:
                log.error("usage message dead-lettered to %s: %s", DLQ_TOPIC, reason)
        if not batch.events:
            return 0
        began = time.perf_counter()
        self._insert(batch)
        self.inserted += len(batch.events)
        if self.metrics is not None:  # only once inserted: a failed batch is redelivered and counted then
            self.metrics.insert_seconds.observe(time.perf_counter() - began)
            self.metrics.inserted.inc(len(batch.events))
            self.metrics.priced(batch.events, batch.charges)
        return len(batch.events)

    def _insert(self, batch: Batch) -> None:
        if self.fault_file is not None and self.fault_file.exists():
            raise ConnectionError(f"ClickHouse made unavailable by the fault switch {self.fault_file}")
        insert_batch(self.client, batch)
