"""Gateway keys in the compacted Kafka topic ``ai.keys.v1``: the admin side and every gateway's reader.

One record per key id, its value :func:`~aimeter.gateway.keys.encode_record`'s JSON; the latest record of a
key is its state. A revocation is a new record with ``revoked_at`` set, never a null value (a tombstone
would let compaction forget the revocation). ``aimeter keys`` writes with acks=all and waits for the
delivery; each gateway reads the topic from the beginning in a thread of its own (no consumer group: it
assigns the one partition), then tails it, so a revocation reaches every replica about as fast as Kafka
delivers a fetch. The request path only reads :attr:`KafkaKeyStore.records`, a plain dict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from aimeter.events import KEYS_TOPIC
from aimeter.gateway.keys import KeyFile, KeyRecord, KeyRecordError, KeyStore, decode_record, encode_record
from aimeter.kafka_admin import ensure_topics
from aimeter.kafka_log import KafkaLog

log = logging.getLogger("aimeter.keys")

ANSWER_S = 10.0  # `aimeter keys`: how long Kafka may take to answer before the command gives up
PARTITION = TopicPartition(KEYS_TOPIC, 0)
# Tailing: the broker answers a fetch as soon as a record arrives (fetch.min.bytes 1); an idle fetch returns
# after 100 ms, and a lost broker is retried within a second, not librdkafka's default 10 s.
_READER_CONFIG = {
    "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": False,
    "auto.offset.reset": "earliest",  # an offset compacted away mid-read: start over, never skip to the end
    "fetch.wait.max.ms": 100, "fetch.error.backoff.ms": 100, "fetch.queue.backoff.ms": 10,
    "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000, "topic.metadata.refresh.interval.ms": 10_000,
}


class KafkaUnreachableError(ValueError):
    """Kafka did not answer an ``aimeter keys`` command; nothing was written."""


def apply_message(records: dict[str, KeyRecord], key: bytes | None, value: bytes | None, offset: int) -> str | None:
    """Apply one topic message to ``records``; returns why it was skipped, or None.

    A record that does not decode is skipped: the key keeps its previous state (a revoked key stays
    revoked, an unknown one stays unknown). A null value, which our writers never produce, removes the
    key, so it is refused: failing closed.
    """
    name = (key or b"").decode(errors="replace")[:64]
    if value is None:
        records.pop(name, None)
        return f"null value (tombstone) at offset {offset} for key {name!r}: key removed, refused from now on"
    try:
        record = decode_record(key, value)
    except KeyRecordError as exc:
        return f"skipped the record at offset {offset} for key {name!r}: {exc}; the key's previous state stands"
    records[record.key_id] = record
    return None


def _consumer(bootstrap: str, who: str, kafka_log: KafkaLog) -> Consumer:
    # group.id is only a label here: nothing subscribes or commits, so no group is ever joined.
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"aimeter-keys-{who}", **_READER_CONFIG,
                     **kafka_log.client_config()})


def _unknown_topic(exc: KafkaException) -> bool:
    code = exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None
    return code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC)


def _position(consumer: Consumer) -> int:
    """The next offset this consumer will read (-1 before its first fetch)."""
    return int(consumer.position([PARTITION])[0].offset)


class KeysTopic:
    """``aimeter keys``'s store: reads the whole topic, writes records with acks=all and waits for them."""

    def __init__(self, bootstrap: str, timeout: float = ANSWER_S, *, partitions: int = 4,
                 replication_factor: int = -1) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        # Used when this command is the first to reach a new cluster: it creates every topic, as a gateway would.
        self.partitions = partitions
        self.replication_factor = replication_factor

    def where(self) -> str:
        return f"Kafka topic {KEYS_TOPIC} at {self.bootstrap}"

    def _unreachable(self, what: str) -> KafkaUnreachableError:
        return KafkaUnreachableError(
            f"Kafka at {self.bootstrap} (AIMETER_KAFKA_BOOTSTRAP) did not answer within {self.timeout:.0f} s, so "
            f"{what}: start it (`aimeter up`, or `aimeter kafka` for the broker alone) or point "
            "AIMETER_KAFKA_BOOTSTRAP at your cluster, then run the command again")

    def load(self) -> dict[str, KeyRecord]:
        """Every key's latest record, read from the beginning to the end the topic had when asked."""
        kafka_log = KafkaLog("aimeter keys", self.bootstrap)
        consumer = _consumer(self.bootstrap, "admin", kafka_log)
        try:
            try:
                low, high = consumer.get_watermark_offsets(PARTITION, timeout=self.timeout)
            except KafkaException as exc:
                if _unknown_topic(exc):
                    return {}  # no key was ever written
                raise self._unreachable("the keys could not be read") from None
            records: dict[str, KeyRecord] = {}
            if high <= low:
                return records
            consumer.assign([TopicPartition(KEYS_TOPIC, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                offset = msg.offset() or 0
                problem = apply_message(records, msg.key(), msg.value(), offset)
                if problem:
                    log.warning("keys: %s", problem)
                if offset + 1 >= high:
                    return records
            raise self._unreachable(f"the keys topic was not read to its end (offset {high})")
        finally:
            consumer.close()

    def put(self, records: Iterable[KeyRecord]) -> None:
        """Write each record and wait until Kafka acknowledged all of them (acks=all), or raise."""
        values = [(r.key_id, encode_record(r)) for r in records]
        if not values:
            return
        try:
            # The keys topic compacted, before anything could auto-create it as a plain log.
            ensure_topics(self.bootstrap, partitions=self.partitions, timeout=self.timeout,
                          replication_factor=self.replication_factor)
        except KafkaException:
            raise self._unreachable("nothing was written") from None
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 0, "message.timeout.ms": int(self.timeout * 1000),
                             **KafkaLog("aimeter keys", self.bootstrap).client_config()})
        failed: list[str] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append(f"{(msg.key() or b'').decode()}: {err.str()}")

        for key_id, value in values:
            producer.produce(KEYS_TOPIC, key=key_id.encode(), value=value, on_delivery=delivered)
        left = producer.flush(self.timeout + 5)
        if left or failed:
            raise KafkaUnreachableError(
                f"{left + len(failed)} of {len(values)} key records were not acknowledged by Kafka at "
                f"{self.bootstrap} ({'; '.join(failed[:3]) or 'no answer'}): run the command again (writing a "
                "record twice is harmless), and check the cluster if it keeps failing")


class KafkaKeyStore:
    """The gateway's view of the topic: ``records`` (read by the request path) kept current by a thread.

    Started, it serves its last local snapshot (``snapshot``) at once, replays the topic from the
    beginning and swaps in exactly what the topic holds when it reaches the end it had at the start; from
    then on each record is applied as it arrives and the snapshot is rewritten when the stream goes idle.
    """

    def __init__(self, bootstrap: str, snapshot: Path, who: str = "gateway") -> None:
        self.bootstrap = bootstrap
        self.snapshot = KeyFile(snapshot)
        self.who = who
        self.records: dict[str, KeyRecord] = {}
        self.caught_up = threading.Event()
        self.answered = threading.Event()  # Kafka gave the topic's end offset
        self._serving_snapshot = False
        self.skipped = 0  # records refused (malformed, wrong version, oversized): each logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = KafkaLog(f"{who} keys reader", bootstrap)

    def refresh(self) -> bool:
        """Nothing to do: the reader thread applies records as they arrive."""
        return False

    def start(self, wait_s: float) -> bool:
        """Serve the snapshot, start the reader and wait up to ``wait_s`` for it to read the topic to its end.
        Returns whether it did; if not, says once that the snapshot is served (the reader keeps trying)."""
        self.records = self._load_snapshot()
        self._thread = threading.Thread(target=self._run, name="keys-reader", daemon=True)
        self._thread.start()
        if self.caught_up.wait(wait_s):
            log.info("%s: %d keys from Kafka topic %s at %s; following it for new keys and revocations",
                     self.who, len(self.records), KEYS_TOPIC, self.bootstrap)
            return True
        self._serving_snapshot = True
        what = ("answered but its keys topic was not read to its end" if self.answered.is_set()
                else "did not answer")
        source = (f"the {len(self.records)} keys of the local snapshot {self.snapshot.path}"
                  if self.snapshot.path.exists() else f"no keys (there is no local snapshot {self.snapshot.path} yet)")
        log.warning("%s: Kafka at %s %s within %.0f s: serving %s; new keys and revocations apply once it is read "
                    "(the reader keeps trying)", self.who, self.bootstrap, what, wait_s, source)
        return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _load_snapshot(self) -> dict[str, KeyRecord]:
        try:
            return self.snapshot.load()
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s: the key snapshot %s is unreadable (%s); no keys until Kafka answers",
                        self.who, self.snapshot.path, exc)
            return {}

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            consumer = _consumer(self.bootstrap, self.who, self._log)
            try:
                self._follow(consumer)
            except Exception:  # a fault of ours: a reader that stopped would leave revoked keys valid, so restart
                log.exception("%s: the keys reader failed; keys stay as they were and it starts over from the "
                              "beginning of the topic in %.0f s", self.who, delay)
                self._stop.wait(delay)
                delay = min(30.0, delay * 2)
            finally:
                consumer.close()

    def _follow(self, consumer: Consumer) -> None:
        high = self._wait_for_topic(consumer)
        if high is None:
            return
        fresh: dict[str, KeyRecord] = {}
        if high == 0:
            self._swap(fresh)
        consumer.assign([TopicPartition(KEYS_TOPIC, 0, OFFSET_BEGINNING)])
        dirty = False
        while not self._stop.is_set():
            batch = self._poll_batch(consumer)
            if not batch:
                if dirty and self.caught_up.is_set():
                    self._write_snapshot()
                    dirty = False
                elif not self.caught_up.is_set() and _position(consumer) >= high:
                    self._swap(fresh)  # the end offset was not a record's (e.g. a transaction marker)
                continue
            self._log.answered()
            # A published dict is never changed: other threads iterate it (budgets) while this one reads on.
            served = dict(self.records)
            for msg in batch:
                key, value, offset = msg.key(), msg.value(), msg.offset() or 0
                problem = apply_message(served, key, value, offset)  # at once, even before the swap
                if problem:
                    self.skipped += 1
                    log.warning("%s: keys topic %s: %s", self.who, KEYS_TOPIC, problem)
                if not self.caught_up.is_set():
                    apply_message(fresh, key, value, offset)
            self.records = served
            if self.caught_up.is_set():
                dirty = True
            elif (batch[-1].offset() or 0) + 1 >= high:
                self._swap(fresh)

    @staticmethod
    def _poll_batch(consumer: Consumer, most: int = 1000) -> list[Message]:
        """The next record (waiting up to 100 ms), then whatever else is already fetched, up to ``most``."""
        batch: list[Message] = []
        msg = consumer.poll(0.1)
        while msg is not None:
            if not msg.error():
                batch.append(msg)
            if len(batch) >= most:
                break
            msg = consumer.poll(0)
        return batch

    def _wait_for_topic(self, consumer: Consumer) -> int | None:
        """The partition's end offset once Kafka answers (0 while the topic does not exist yet); None if stopped."""
        while not self._stop.is_set():
            try:
                low, high = consumer.get_watermark_offsets(PARTITION, timeout=1.0)
            except KafkaException as exc:
                if _unknown_topic(exc):  # Kafka answered: no key was ever written there
                    self.answered.set()
                    return 0  # the reader picks the topic up once it is created
                self._stop.wait(0.2)
                continue
            self._log.answered()
            self.answered.set()
            return 0 if high <= low else int(high)
        return None

    def _swap(self, fresh: dict[str, KeyRecord]) -> None:
        """Serve exactly what the topic holds (a snapshot key absent from the topic is dropped)."""
        self.records = dict(fresh)
        self.caught_up.set()
        self._write_snapshot()
        if self._serving_snapshot:
            self._serving_snapshot = False
            log.warning("%s: caught up with Kafka topic %s at %s: %d keys; the local snapshot is no longer served",
                        self.who, KEYS_TOPIC, self.bootstrap, len(fresh))

    def _write_snapshot(self) -> None:
        try:
            self.snapshot.save(dict(self.records))
        except OSError as exc:
            log.warning("%s: could not write the key snapshot %s (%s); the gateway keeps serving",
                        self.who, self.snapshot.path, exc)


def describe(store: KeyStore) -> str:
    """For the gateway's start line."""
    if isinstance(store, KafkaKeyStore):
        return f"keys from Kafka topic {KEYS_TOPIC} at {store.bootstrap} (snapshot {store.snapshot.path})"
    return f"keys from {store.path}" if isinstance(store, KeyFile) else "keys"
