"""The pricer's Kafka side: a plain confluent-kafka consumer loop: poll a batch, write it, commit.

A framework subscriber (FastStream, used before) hid the two things this loop must get right, and its
per-message wrappers cost CPU on the hot path (docs/decisions.md): what happens after a failed write (seek
back to the batch start, back off, redeliver) and after the broker vanishes (keep polling, so
librdkafka rejoins the group and the assignment comes back). Offsets are committed only after
the batch is written, synchronously, so a crash redelivers at most the batch in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from aimeter.events import USAGE_TOPIC
from aimeter.kafka_log import KafkaLog
from aimeter.pricer.metrics import PricerMetrics

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0
PROGRESS_EVERY_S = 30.0
LAG_EVERY_S = 1.0
SESSION_TIMEOUT_MS = 10_000
# After a lost session librdkafka rejoins by itself, within about one session timeout once the
# broker answers. In CI it was once seen never to (0 partitions for 90 s after the broker came
# back mid-timeout, under FastStream and again under this loop). Past this deadline the consumer is
# replaced, which always rejoins; commits are per batch, so nothing is lost or doubled by it.
REJOIN_DEADLINE_S = 3 * SESSION_TIMEOUT_MS / 1000


def consumer_config(bootstrap: str, group: str, kafka_log: KafkaLog | None = None) -> dict[str, object]:
    """With ``kafka_log``, librdkafka's log is one line per broker state change (kafka_log.py)."""
    return {
        **(kafka_log.client_config() if kafka_log is not None else {}),
        "bootstrap.servers": bootstrap, "group.id": group, "client.id": "aimeter-pricer",
        "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
        # 10 s (librdkafka's default is 45 s): a dead pricer's partitions move to a live one sooner.
        # Heartbeats run on librdkafka's own thread, so a long batch does not count against it.
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        # Fetch in bulk: the loop asks for thousands of messages at a time.
        "fetch.min.bytes": 1, "fetch.wait.max.ms": 100, "queued.max.messages.kbytes": 65536,
    }


class Offsets:
    """First and last offset per partition of one batch: where to seek back to, what to commit."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, int], int] = {}
        self.last: dict[tuple[str, int], int] = {}

    def add(self, msg: Message) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None, "a consumed message names its topic"
        assert partition is not None, "a consumed message has a partition"
        assert offset is not None, "a consumed message has an offset"
        key = (topic, partition)
        self.first.setdefault(key, offset)
        self.last[key] = offset

    def to_commit(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o + 1) for (t, p), o in self.last.items()]

    def to_rewind(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.first.items()]


class ConsumerLoop:
    """Runs on its own thread until :meth:`stop`; a fatal Kafka error ends it with an exception."""

    def __init__(self, make_consumer: Callable[[], Consumer], write: Callable[[list[bytes]], int], *,
                 batch_max: int, poll_timeout_s: float = 0.5, kafka_log: KafkaLog | None = None,
                 metrics: PricerMetrics | None = None) -> None:
        self.make_consumer = make_consumer
        self.kafka_log = kafka_log
        self.consumer = make_consumer()
        self.lost_at: float | None = None  # monotonic time of a lost session not yet followed by an assignment
        self.replaced = 0
        self.write = write
        self.batch_max = batch_max
        self.poll_timeout_s = poll_timeout_s
        self.stopping = threading.Event()
        self.failures = 0
        self.inserted = 0
        self._last_error = ""
        self._progress_at = time.monotonic()
        self._progress_count = 0
        self.metrics = metrics
        self._lag_at = 0.0

    def subscribe(self) -> None:
        self.consumer.subscribe([USAGE_TOPIC], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.step()
        finally:
            self.consumer.close()  # leaves the group at once, so a replacement gets the partitions now

    def step(self) -> int:
        """One poll, write and commit. Returns how many events were inserted."""
        self._check_rejoined()
        values, offsets = self._poll()
        if self.metrics is not None:
            self._measure(len(values))
        if not values:
            return 0
        if self.kafka_log is not None and self.kafka_log.down:
            self.kafka_log.answered()
        try:
            written = self.write(values)
        except Exception as exc:  # noqa: BLE001 - any failure: redeliver the batch, never commit past it
            if self.metrics is not None:
                self.metrics.failures.inc()
            self._retry_later(offsets, len(values), exc)
            return 0
        self.failures = 0
        self._commit(offsets)
        self.inserted += written
        self._progress(written)
        return written

    def _measure(self, batch: int) -> None:
        """Batch size, and at most once a second the lag from librdkafka's cached watermarks (no broker call)."""
        assert self.metrics is not None
        if batch:
            self.metrics.batch(batch)
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        try:
            positions = self.consumer.position(self.consumer.assignment())
            lag, known = 0, False
            for tp in positions:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    lag, known = lag + max(high - tp.offset, 0), True
            self.metrics.lag.set(lag if known else -1)
        except (KafkaException, RuntimeError) as exc:
            log.debug("consumer lag not measured: %s", exc)

    def _check_rejoined(self) -> None:
        if self.lost_at is None or time.monotonic() - self.lost_at < REJOIN_DEADLINE_S:
            return
        log.warning("no partitions assigned %.0f s after the group session was lost; replacing the consumer",
                    time.monotonic() - self.lost_at)
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.info("closing the stuck consumer: %s", exc)
        self.consumer = self.make_consumer()
        self.subscribe()
        self.replaced += 1
        self.lost_at = time.monotonic()  # try again after another deadline if this one does not rejoin either

    def _poll(self) -> tuple[list[bytes], Offsets]:
        values: list[bytes] = []
        offsets = Offsets()
        for msg in self.consumer.consume(self.batch_max, self.poll_timeout_s):
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            offsets.add(msg)
            values.append(msg.value() or b"")  # a null value is poison: it is dead-lettered, not skipped
        return values, offsets

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)
        if self.kafka_log is not None:  # one line per broker state change
            self.kafka_log.error(err)
            return
        text = str(err)
        if text != self._last_error:  # a broker outage repeats the same error many times a second
            log.warning("Kafka: %s (the consumer keeps polling and resumes when the broker answers)", text)
            self._last_error = text

    def _retry_later(self, offsets: Offsets, n: int, exc: Exception) -> None:
        self.failures += 1
        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** min(self.failures, 10))
        log.warning("writing a batch of %d events failed (%s: %s); retrying the batch in %.1f s",
                    n, type(exc).__name__, exc, delay)
        for tp in offsets.to_rewind():
            try:
                self.consumer.seek(tp)
            except KafkaException as seek_exc:  # revoked meanwhile: its new owner starts at the committed offset
                log.info("not rewinding %s[%d]: %s", tp.topic, tp.partition, seek_exc)
        self.stopping.wait(delay)

    def _commit(self, offsets: Offsets) -> None:
        try:
            self.consumer.commit(offsets=offsets.to_commit(), asynchronous=False)
        except KafkaException as exc:
            # The rows are in ClickHouse; a later commit covers these offsets. If the partition moved,
            # its new owner re-reads them and the duplicates collapse on event_id.
            log.warning("committing offsets failed (%s); the batch may be redelivered and deduplicated", exc)

    def _progress(self, written: int) -> None:
        self._progress_count += written
        now = time.monotonic()
        if now - self._progress_at >= PROGRESS_EVERY_S:
            rate = self._progress_count / (now - self._progress_at)
            log.info("%d events inserted in total, %.0f events/s over the last %.0f s",
                     self.inserted, rate, now - self._progress_at)
            self._progress_at, self._progress_count = now, 0

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._last_error = ""
        self.lost_at = None
        if self.kafka_log is not None:
            self.kafka_log.answered()
        log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", _describe(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.lost_at = time.monotonic()
        log.warning("lost %s (session timed out); rejoining the group", _describe(partitions))


def pricer_consumer(bootstrap: str, group: str, write: Callable[[list[bytes]], int], batch_max: int,
                    metrics: PricerMetrics | None = None) -> ConsumerLoop:
    """The pricer's loop; it starts whether or not Kafka answers, and logs one line per broker state change."""
    kafka_log = KafkaLog("pricer", bootstrap)
    return ConsumerLoop(lambda: Consumer(consumer_config(bootstrap, group, kafka_log)), write,
                        batch_max=batch_max, kafka_log=kafka_log, metrics=metrics)


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "no partitions"
