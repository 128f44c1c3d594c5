"""Publishes usage events to Kafka off the request path, from a local journal that survives the process.

Per event, on the request path: one ``pwrite`` into the journal's page cache (``journal.py``), then
``produce()``, which only enqueues into librdkafka (~5 µs); batching, retries and delivery reports run
in librdkafka's threads and one poll thread of ours, never on the event loop. Kafka need not answer
for the gateway to serve: events wait in librdkafka, then in the spool.

What Kafka refuses (delivery timeout, full local queue, shutdown) goes to the fsync'ed spool and is
re-published once the cluster answers again. If the spool cannot take it (full, or its disk is), the
event is handed back to librdkafka and kept in memory, and the journal segments are kept too, so a
crash still finds it at the next start. A journal segment is retired (its per-hour counts folded into
the counts file, which keeps this gateway's totals across restarts, then the file deleted) once every event in it was
acknowledged or spooled: librdkafka reports every message within ``message.timeout.ms``, so a segment
closed longer ago than that (plus a margin for the report to be served) is settled.

Reconciliation counts: every ``COUNTS_EVERY_S`` the poll thread sends, for each hour whose total changed, this
gateway's cumulative count of journaled events to ``ai.counts.v1`` (``events/counts.py``), and once more at
stop; the pricer stores them and ``aimeter reconcile`` compares them with the stored events. A count record
that Kafka refuses is simply sent again (a later total replaces it); after a restart every hour is sent again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from aimeter.events import COUNTS_TOPIC, USAGE_TOPIC, UsageEvent, cloudevent_headers
from aimeter.events.counts import encode_count
from aimeter.gateway.journal import Journal, SegmentCounts, load_counts, read_records, save_counts
from aimeter.gateway.spool import Spool
from aimeter.kafka_log import KafkaLog

log = logging.getLogger(__name__)
REPLAY_EVERY_S = 2.0
SETTLE_MARGIN_S = 5.0  # after message.timeout.ms: librdkafka's timeout scan runs every second, then poll()
COUNTS_EVERY_S = 2.0  # reconcile's counts trail the journal by this, plus a segment read and the pricer's insert


@dataclass
class PublisherStats:
    emitted: int = 0
    spooled: int = 0
    replayed: int = 0
    held: int = 0  # times the spool could not take a refused event and it went back into librdkafka's memory
    dropped: int = 0  # given up: neither the spool nor librdkafka's queue could take it


def encode_event(event: UsageEvent) -> bytes:
    return event.model_dump_json().encode()


@functools.lru_cache(maxsize=64)
def _hour_label(epoch_hour: int) -> str:
    return datetime.fromtimestamp(epoch_hour * 3600, UTC).strftime("%Y-%m-%dT%H:00Z")


def hour_of(started_at: datetime) -> str:
    """Reconciliation period: the UTC hour the request started (the same clock ClickHouse partitions by)."""
    return _hour_label(int(started_at.timestamp()) // 3600)


class StateLog:
    """One log line when a condition starts and one when it ends, with what happened meanwhile."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.since: float | None = None

    def update(self, bad: bool, detail: str) -> None:
        if bad and self.since is None:
            self.since = time.monotonic()
            log.error("%s: %s", self.name, detail)
        elif not bad and self.since is not None:
            log.warning("%s: recovered after %.1f s; %s", self.name, time.monotonic() - self.since, detail)
            self.since = None


class KafkaPublisher:
    def __init__(self, bootstrap: str, spool_path: Path, source: str, *, counts_path: Path | None = None,
                 journal_dir: Path | None = None, topic: str = USAGE_TOPIC, delivery_timeout_s: float = 30.0,
                 spool_max_bytes: int = 256 << 20, fail_closed: bool = False,
                 journal_segment_bytes: int = 8 << 20, gateway_id: str | None = None) -> None:
        self.topic = topic
        self.gateway_id = gateway_id or spool_path.stem  # (run.py names the spool <gateway id>.jsonl)
        self.fail_closed = fail_closed
        self.source = source
        self.spool = Spool(spool_path, spool_max_bytes)
        self.journal = Journal(journal_dir or spool_path.with_suffix(".journal"),
                               segment_bytes=journal_segment_bytes)
        self.counts_path = counts_path or spool_path.with_suffix(".counts.json")
        self.settle_s = delivery_timeout_s + SETTLE_MARGIN_S
        self.stats = PublisherStats()
        self.kafka_log = KafkaLog("gateway", bootstrap)
        self._unjournaled_hours: Counter[str] = Counter()
        self._unjournaled_lock = threading.Lock()
        self._hours: Counter[str] = Counter()  # folded per-hour counts (the counts file), and the last folded segment
        self._through = 0
        self._segment_counts: dict[int, SegmentCounts] = {}  # live segments by seq, read incrementally
        self._counts_sent: dict[str, int] = {}  # hour -> the total last handed to Kafka (popped if refused)
        self._counts_at = time.monotonic()  # the first round (every hour, after a restart) COUNTS_EVERY_S after start
        self._held_at = -1e18  # monotonic time of the last event the spool could not take
        self._replayed_at: float | None = None  # a spool replay whose file is kept until its events settled
        self._spool_state = StateLog("spool")
        self._journal_state = StateLog("journal")
        self._errors_seen: set[str] = set()
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # broker-side dedup of producer retries
            "acks": "all",
            # Batches every 100 ms. At 5 ms, a gateway serving ~1,000 req/s woke librdkafka's broker thread
            # ~2 times per event and the poll thread ~0.6 times, on the gateway's own core: ~70 us of CPU per
            # event and a preempted event loop. Events are off the request path; 100 ms is noise in freshness.
            "linger.ms": 100,
            "compression.type": "lz4",
            # After this the delivery report fails and the event goes to the spool instead of being lost.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "queue.buffering.max.messages": 200_000,
            # Reports only for failures (those are spooled): a Python callback per delivered event would
            # take the GIL from the request path thousands of times a second.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            **self.kafka_log.client_config(),
        })
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)

    def start(self) -> None:
        """Replay what a previous process left (journal segments, spool), then take appends. Never waits for Kafka."""
        self._hours, self._through = load_counts(self.counts_path)
        self._replay_journal()
        self.journal.open()
        self._poller.start()
        self.replay_spool()

    def accepting(self) -> bool:
        """False only under the fail-closed policy when the journal has no room allocated for the next event:
        then the gateway answers 503 before forwarding, so no answered request goes unrecorded."""
        return not self.fail_closed or self.journal.can_keep()

    def metrics(self) -> dict[str, float]:
        stats, journal = self.stats, self.journal
        return {"aimeter_events_emitted_total": stats.emitted,
                "aimeter_events_journaled_total": journal.appended,
                "aimeter_events_unjournaled_total": journal.unjournaled,
                "aimeter_events_spooled_total": stats.spooled, "aimeter_events_replayed_total": stats.replayed,
                "aimeter_events_held_in_memory_total": stats.held,
                "aimeter_events_dropped_total": stats.dropped, "aimeter_spool_bytes": self.spool.depth_bytes(),
                "aimeter_journal_bytes": journal.depth_bytes(),
                "aimeter_journal_full": float(not journal.can_keep()),
                "aimeter_spool_failing": float(self._spool_state.since is not None),
                "aimeter_kafka_down": float(self.kafka_log.down),
                "aimeter_producer_queue_length": len(self._producer)}

    def publish_encoded(self, payload: bytes, event_id: str, started_at: datetime, ended_at: datetime) -> None:
        """Journal, then enqueue, one encoded event (gateway/event_json.py). Never raises."""
        if not self.journal.append(payload):
            with self._unjournaled_lock:  # only when the disk is full; saved to the counts file by the poll thread
                self._unjournaled_hours[hour_of(started_at)] += 1
        self.stats.emitted += 1
        self._produce(payload, event_id, ended_at.isoformat())

    def _produce(self, payload: bytes, event_id: str, time_iso: str) -> None:
        headers = cloudevent_headers(event_id, self.source, time_iso)
        try:
            self._producer.produce(self.topic, payload, key=event_id.encode(), headers=headers)
        except BufferError:
            self._to_spool(payload, "local producer queue full")
        except Exception as exc:  # noqa: BLE001 - metering must never break the proxy
            self._to_spool(payload, f"produce failed: {exc}")

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        payload = msg.value() or b""
        if self.spool.append(payload):
            self.stats.spooled += 1  # (the failing state ends in _report_states, not on one lucky append)
            return
        self._hold(payload, msg, f"delivery failed: {err}")

    def _hold(self, payload: bytes, msg: Message, why: str) -> None:
        """The spool cannot take it: back into librdkafka's queue (memory); the journal keeps it across a crash."""
        self._held_at = time.monotonic()
        self._spool_state.update(True, f"cannot keep refused events in {self.spool.path} ({self.spool.last_error}; "
                                       f"{why}); keeping them in memory and in the journal until Kafka takes them")
        try:
            self._producer.produce(self.topic, payload, key=msg.key(), headers=msg.headers())
            self.stats.held += 1
        except (BufferError, KafkaException):
            self.stats.dropped += 1
            log.error("usage event DROPPED: spool %s cannot take it (%s) and librdkafka's queue is full; "
                      "%d dropped so far", self.spool.path, self.spool.last_error, self.stats.dropped)

    def _to_spool(self, payload: bytes, why: str) -> None:
        if self.spool.append(payload):
            self.stats.spooled += 1
            return
        self.stats.dropped += 1
        self._held_at = time.monotonic()  # its journal segment is kept: a restart re-publishes it
        self._spool_state.update(True, f"usage events DROPPED: {self.spool.last_error} ({why})")

    def _replay_journal(self) -> None:
        """Segments a previous process left: fold those already settled, re-publish the rest."""
        replayed = 0
        for segment in self.journal.recover():
            if segment.seq <= self._through:  # counted and settled; only its deletion was interrupted
                segment.path.unlink(missing_ok=True)
                continue
            for line in read_records(segment.path):
                replayed += self._republish(line)
            segment.closed_at = time.monotonic()
            self.journal.closed.append(segment)
        if replayed:
            self.stats.replayed += replayed
            log.warning("journal: re-published %d events left by a previous process (duplicates of events Kafka "
                        "already had collapse on event_id)", replayed)

    def _republish(self, line: bytes) -> int:
        try:
            event = orjson.loads(line)
            event_id, ended = str(event["event_id"]), str(event["ended_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("unreadable journaled or spooled event kept out of Kafka: %r", line[:200])
            return 0
        self._produce(line, event_id, ended)
        return 1

    def replay_spool(self) -> int:
        """Re-publish spooled events; failures are spooled again by their delivery reports. The replayed file
        is deleted only once they settled (``retire_settled``), so a crash meanwhile replays it again."""
        if self._replayed_at is not None:
            return 0
        count = sum(self._republish(line) for line in self.spool.take())
        if not count:
            self.spool.finish_replay()  # (nothing, or nothing readable, was in it)
            return 0
        self._replayed_at = time.monotonic()
        if count:
            self.stats.replayed += count
            log.info("re-published %d spooled usage events", count)
        return count

    def _kafka_answers(self) -> bool:
        try:
            self._producer.list_topics(self.topic, timeout=2.0)
        except KafkaException:
            return False
        self.kafka_log.answered()
        return True

    def _poll_loop(self) -> None:
        last_replay = time.monotonic()
        while not self._stop.is_set():
            try:
                self._producer.poll(0.2)
                self.journal.prepare()
                self._report_states()
                self.retire_settled()
                now = time.monotonic()
                if now - self._counts_at >= COUNTS_EVERY_S:
                    self._counts_at = now
                    self.send_counts()
                if now - last_replay >= REPLAY_EVERY_S:
                    last_replay = now  # (not on every wake-up: each check is a stat() or a metadata request)
                    if (self.kafka_log.down or (self.spool.depth_bytes() and len(self._producer) == 0)) \
                            and self._kafka_answers() and self.spool.depth_bytes():
                        self.replay_spool()
            except Exception as exc:
                if type(exc).__name__ not in self._errors_seen:
                    self._errors_seen.add(type(exc).__name__)
                    log.exception("publisher thread: %s (it keeps running)", exc)
                self._stop.wait(0.5)

    def _report_states(self) -> None:
        if self._spool_state.since is not None and time.monotonic() > self._held_at + self.settle_s:
            # Every event held in memory had a full delivery timeout since without failing again: delivered.
            self._spool_state.update(False, f"no refused event was handed back to memory for a whole delivery "
                                            f"timeout; {self.stats.held} hand-backs so far, all delivered")
        journal = self.journal
        full = not journal.can_keep()
        policy = "answering 503 before forwarding (policy closed)" if self.fail_closed else \
            "still serving; new events are kept in memory only (policy open)"
        self._journal_state.update(
            full, f"no room for the next segment in {journal.directory} ({journal.appended} events journaled, "
                  f"{journal.unjournaled} not); {policy}" if full else
                  f"{journal.unjournaled} events could not be journaled meanwhile")

    def retire_settled(self, *, everything: bool = False) -> int:
        """Fold the counts of settled journal segments into the counts file, then delete them."""
        now = time.monotonic()
        if everything:
            closed_before = now + 1
        elif now < self._held_at + self.settle_s:
            closed_before = -1.0  # events the spool could not take are in flight again: keep every segment
        else:
            closed_before = now - self.settle_s
        if self._replayed_at is not None and self._replayed_at < closed_before:
            self.spool.finish_replay()
            self._replayed_at = None
        done = list(self.journal.retirable(closed_before))
        unjournaled = self._take_unjournaled()
        if not done and not unjournaled:
            return 0
        for segment in done:
            counted = self._segment_counts.pop(segment.seq, None) or SegmentCounts(segment.path)
            self._hours.update(counted.advance())
            self._through = max(self._through, segment.seq)
        self._hours.update(unjournaled)
        save_counts(self.counts_path, self._hours, self._through)
        for segment in done:
            segment.path.unlink(missing_ok=True)
        return len(done)

    def emitted_hours(self) -> Counter[str]:
        """Cumulative events per hour: the counts file's, plus the live journal segments', plus those that found
        no room in the journal and are not folded yet. Called on the poll thread (or at close, after it)."""
        total = Counter(self._hours)
        live = {segment.seq: segment for segment in self.journal.live_segments()}
        for seq, segment in live.items():
            counted = self._segment_counts.get(seq)
            if counted is None:
                counted = self._segment_counts[seq] = SegmentCounts(segment.path)
            total.update(counted.advance())
        with self._unjournaled_lock:
            total.update(self._unjournaled_hours)
        return total

    def send_counts(self) -> int:
        """Produce the total of every hour that changed since it was last handed to Kafka; returns how many."""
        produced_at, sent = datetime.now(UTC), 0
        for hour, total in sorted(self.emitted_hours().items()):
            if self._counts_sent.get(hour) == total:
                continue
            key, value = encode_count(self.gateway_id, hour, total, produced_at)
            try:
                self._producer.produce(COUNTS_TOPIC, value, key=key, on_delivery=self._on_count_delivery)
            except (BufferError, KafkaException) as exc:
                log.warning("counts: cannot queue the count of %s for %s (%s); sent again in %.0f s",
                            hour, COUNTS_TOPIC, exc, COUNTS_EVERY_S)
                break
            self._counts_sent[hour] = total
            sent += 1
        return sent

    def _on_count_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Only failures are reported (delivery.report.only.error): forget the hour, the next round resends it."""
        if err is not None:
            self._counts_sent.pop((msg.key() or b"").decode().rpartition("|")[2], None)

    def _take_unjournaled(self) -> Counter[str]:
        if not self._unjournaled_hours:
            return Counter()
        with self._unjournaled_lock:
            taken, self._unjournaled_hours = self._unjournaled_hours, Counter()
        return taken

    def close(self, timeout: float = 10.0) -> None:
        """Flush; anything still undelivered after ``timeout`` is purged into the spool, not lost."""
        kept_elsewhere = self.stats.held + self.stats.dropped
        if self._producer.flush(timeout):
            self._producer.purge()  # every queued or in-flight event gets a failure report: it is spooled
            # Serve the reports until the queue stops shrinking: len() also counts librdkafka's own requests,
            # e.g. one waiting for a broker that is down, which never leaves.
            last, deadline = -1, time.monotonic() + 5.0
            while (left := self._producer.flush(0.2)) and left != last and time.monotonic() < deadline:
                last = left
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(timeout=5)
        self.journal.close()
        # Every event is now in Kafka or in the spool, unless the spool refused one during this stop.
        if self.stats.held + self.stats.dropped == kept_elsewhere:
            self.retire_settled(everything=True)
        else:
            self.retire_settled()
            log.error("gateway: %d journal segments kept in %s (the spool could not take every undelivered "
                      "event); they are re-published at the next start", len(self.journal.closed),
                      self.journal.directory)
        self.send_counts()  # the final totals; if Kafka does not take them now, the next start sends them again
        if self._producer.flush(min(timeout, 2.0)):
            self._producer.purge()
            log.warning("gateway: the last reconciliation counts were not delivered to %s; they are sent again "
                        "at the next start (until then reconcile may show a gap for this gateway)", COUNTS_TOPIC)
