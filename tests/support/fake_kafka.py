"""In-memory stand-ins for the confluent_kafka ``Consumer`` methods the pricer's loop calls and the ``Producer``
methods the gateway's publisher calls.

One :class:`FakeBroker` holds the partitions' messages and the group's committed offsets, and records every
call that matters (``ops``), so a test can assert the order of writes and commits. Each
:class:`FakeConsumer` is one group member: ``subscribe`` assigns it every partition at its committed offset
(calling ``on_assign``), ``consume`` reads from its positions, ``seek`` moves them, ``lose()`` plays a session
timeout (``on_lost``). Real-broker tests of the same loop live in tests/integration/test_pricer_consumer.py.

:class:`FakeProducer` is built from the publisher's own config (its ``on_delivery`` callback); what it does with
a message depends on its :class:`ProducerBroker`: ``up`` takes it, ``failing`` reports a delivery failure at the
next poll or flush, neither keeps it queued (as librdkafka does until ``message.timeout.ms``); ``purge()``
fails every queued message; ``queue_full`` makes ``produce`` raise ``BufferError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aimeter.events import USAGE_TOPIC


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None,
                 error: KafkaError | None = None, key: bytes | None = None,
                 headers: list[tuple[str, Any]] | None = None) -> None:
        self._topic, self._partition, self._offset, self._value, self._error = topic, partition, offset, value, error
        self._key, self._headers = key, headers

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, Any]] | None:
        return self._headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error


class FakeBroker:
    def __init__(self, topic: str, partitions: int = 2) -> None:
        self.topic = topic
        self.logs: dict[int, list[bytes | None]] = {p: [] for p in range(partitions)}
        self.committed: dict[int, int] = {}
        self.ops: list[tuple[Any, ...]] = []  # ("commit", {partition: offset}), ("seek", p, o), ("close",) …
        self.errors: list[KafkaError] = []  # handed out once, before any message, by the next consume()
        self.fail_commits = 0  # the next N commits raise KafkaException
        self.consumers: list[FakeConsumer] = []

    def produce(self, partition: int, *values: bytes | None) -> None:
        self.logs[partition].extend(values)

    def consumer(self) -> FakeConsumer:
        made = FakeConsumer(self)
        self.consumers.append(made)
        return made


class FakeConsumer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.positions: dict[int, int] = {}
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.closed = False

    # the confluent_kafka.Consumer methods the loop uses
    def subscribe(self, topics: list[str], on_assign: Callable[..., None] | None = None,
                  on_revoke: Callable[..., None] | None = None, on_lost: Callable[..., None] | None = None) -> None:
        assert topics == [self.broker.topic]
        self.callbacks = {k: v for k, v in (("assign", on_assign), ("revoke", on_revoke), ("lost", on_lost)) if v}
        self.positions = {p: self.broker.committed.get(p, 0) for p in self.broker.logs}
        self.broker.ops.append(("subscribe", id(self)))
        if "assign" in self.callbacks:
            self.callbacks["assign"](self, self._partitions())

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        assert not self.closed
        out = [FakeMessage(self.broker.topic, -1, -1, None, e) for e in self.broker.errors]
        self.broker.errors.clear()
        for p, log in self.broker.logs.items():
            while p in self.positions and self.positions[p] < len(log) and len(out) < num_messages:
                out.append(FakeMessage(self.broker.topic, p, self.positions[p], log[self.positions[p]]))
                self.positions[p] += 1
        self.broker.ops.append(("consume", len(out)))
        return out

    def commit(self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True) -> None:
        assert offsets is not None, "the loop commits the batch's offsets, never the consumer's position"
        assert asynchronous is False, "the loop commits synchronously"
        if self.broker.fail_commits:
            self.broker.fail_commits -= 1
            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT, "commit timed out"))
        done = {tp.partition: tp.offset for tp in offsets}
        self.broker.committed.update(done)
        self.broker.ops.append(("commit", done))

    def seek(self, partition: TopicPartition) -> None:
        self.positions[partition.partition] = partition.offset
        self.broker.ops.append(("seek", partition.partition, partition.offset))

    def assignment(self) -> list[TopicPartition]:
        return self._partitions()

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions[tp.partition]) for tp in partitions]

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        return 0, len(self.broker.logs[partition.partition])

    def close(self) -> None:
        self.closed = True
        self.broker.ops.append(("close", id(self)))

    # what the broker does to a member
    def lose(self) -> None:
        """A session timeout: the partitions are gone until this member (or a replacement) rejoins."""
        lost = self._partitions()
        self.positions = {}
        self.callbacks["lost"](self, lost)

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.broker.topic, p, o) for p, o in self.positions.items()]


class ProducerBroker:
    def __init__(self) -> None:
        self.up = True
        self.failing = False  # down and reporting failures (not just slow)
        self.queue_full = False
        self.log: list[FakeMessage] = []  # what the usage topic holds, in order
        self.other: list[FakeMessage] = []  # what other topics (the counts topic) got, in order
        self.producers: list[FakeProducer] = []

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        made = FakeProducer(config, self)
        self.producers.append(made)
        return made

    def values(self) -> list[bytes | None]:
        return [m.value() for m in self.log]


class FakeProducer:
    def __init__(self, config: dict[str, Any], broker: ProducerBroker) -> None:
        self.broker, self.on_delivery = broker, config["on_delivery"]
        self.queue: list[FakeMessage] = []
        self.reports: list[tuple[KafkaError, FakeMessage]] = []
        self.lock = threading.Lock()
        self.callbacks: dict[int, Callable[[KafkaError, FakeMessage], None]] = {}

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                headers: list[tuple[str, Any]] | None = None,
                on_delivery: Callable[[KafkaError, FakeMessage], None] | None = None) -> None:
        if self.broker.queue_full:
            raise BufferError("Local: Queue full")
        with self.lock:
            message = FakeMessage(topic, 0, -1, value, key=key, headers=headers)
            if on_delivery is not None:  # a per-message callback replaces the configured one, as in librdkafka
                self.callbacks[id(message)] = on_delivery
            self.queue.append(message)

    def poll(self, timeout: float = -1) -> int:
        return self._serve()

    def flush(self, timeout: float = -1) -> int:
        self._serve()
        return len(self)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        with self.lock:
            purged, self.queue = self.queue, []
            self.reports += [(KafkaError(KafkaError._PURGE_QUEUE, "purged"), m) for m in purged]

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object:
        if not self.broker.up:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
        return object()

    def __len__(self) -> int:
        return len(self.queue) + len(self.reports)

    def _serve(self) -> int:
        """Deliver or fail what is queued, then run the failure reports (outside the lock: a callback may produce)."""
        with self.lock:
            if self.broker.up:
                self.broker.log += [m for m in self.queue if m.topic() == USAGE_TOPIC]
                self.broker.other += [m for m in self.queue if m.topic() != USAGE_TOPIC]
                for delivered in self.queue:  # only failures are reported (delivery.report.only.error)
                    self.callbacks.pop(id(delivered), None)
                self.queue = []
            elif self.broker.failing:
                self.reports += [(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), m) for m in self.queue]
                self.queue = []
            reports, self.reports = self.reports, []
        for err, msg in reports:
            self.callbacks.pop(id(msg), self.on_delivery)(err, msg)
        return len(reports)
