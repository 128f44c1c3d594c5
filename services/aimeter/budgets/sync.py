"""Keeps a replica's budget ledger current: period-to-date spend from ClickHouse at start, then every replica's
usage events from the usage topic, priced with the pricer's own core.

Exact hand-over without double counting: at start the replica picks a cutoff ``T0 - lag`` (lag: how far the
pricer may trail the topic, default 10 minutes). Spend of events that *started* before the cutoff comes from the
ledger (``usage_costs FINAL``); events that started at or after it come from the topic, read from the first
offset whose timestamp is at or after the cutoff (an event is produced after it started, so none is missed).
Duplicates on the topic are dropped by event id (the ledger remembers the last 200,000 ids).

Why a confluent-kafka thread and not FastStream (the house framework for consumers off the hot path): every
replica must read *every* partition from a timestamp, with no consumer group (a group would split the events
between replicas, and each needs all of them), and decoding plus pricing every replica's events must not run
on the event loop that serves requests. A thread does the Kafka reads and the pricing; the ledger is updated
on the loop from the thread's inbox (a deque, drained before each check), so the request path takes no lock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from aimeter.budgets.ledger import Scopes, to_units
from aimeter.budgets.model import ScopeKind, budget_window
from aimeter.budgets.pricing import Costs
from aimeter.events.topics import USAGE_TOPIC

log = logging.getLogger(__name__)
COLUMNS = {ScopeKind.KEY: "api_key_id", ScopeKind.TEAM: "team", ScopeKind.PROJECT: "project", ScopeKind.USER: "user"}
HEALTH_EVERY_S = 1.0


def spend_sql(scope: ScopeKind) -> str:
    """Period-to-date spend of one scope value before the cutoff, from the priced ledger (newest rating)."""
    # The column comes from COLUMNS (a fixed map); the values are bound parameters.
    return (f"SELECT toString(sum(cost_usd)) FROM usage_costs FINAL WHERE {COLUMNS[scope]} = {{value:String}} "  # noqa: S608
            "AND started_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
            "AND started_at < fromUnixTimestamp64Milli({cutoff:Int64}, 'UTC')")


def scopes_of(event: Any) -> Scopes:
    a = event.attribution
    return Scopes(a.api_key_id, a.team, a.project, a.user)


def started_of(event: Any) -> float:
    started = event.started_at
    if isinstance(started, str):
        started = datetime.fromisoformat(started.replace("Z", "+00:00"))
    return float(started.timestamp())


class TopicFollower:
    """A daemon thread that loads period-to-date spend from ClickHouse, then reads ai.usage.v1 (every partition,
    from the cutoff) and prices each event. Results go to ``inbox``, which the gate drains on the event loop
    before each check, so the ledger is only ever touched by one thread. ``ok`` says whether the ledger is
    current (loaded, and Kafka reachable within the last second or so): budgets failing closed need it."""

    def __init__(self, bootstrap: str, costs: Costs, *, cutoff: float, now: float,
                 loader: Callable[[], Any] | None, accounts: Callable[[], list[Any]],
                 topic: str = USAGE_TOPIC) -> None:
        self.costs, self.topic, self.cutoff, self.now = costs, topic, cutoff, now
        self.loader, self.accounts = loader, accounts
        self.inbox: deque[Any] = deque()
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"aimeter-budgets-{uuid.uuid4()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": False,
            "fetch.wait.max.ms": 20,  # the broker answers a fetch within 20 ms: propagation delay, not batching
            "socket.connection.setup.timeout.ms": 2000, "topic.metadata.refresh.interval.ms": 2000,
            "log_level": 3})
        self.stopping = threading.Event()
        self.loaded = loader is None
        self.assigned = False
        self.behind: dict[int, int] = {}  # partition -> the end offset at assignment, until read past it
        self.reachable = False
        self.current = threading.Event()  # set once loaded, assigned and caught up: checks see the whole ledger
        self.thread = threading.Thread(target=self._run, name="budgets-follower", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.consumer.close()

    @property
    def ok(self) -> bool:
        """The ledger is current: spend loaded, the topic read up to where it ended at start, the broker answering
        (checked every second). Budgets with ``on_kafka_down=fail_closed`` refuse while it is not."""
        return self.reachable and self.current.is_set()

    def wait_current(self, timeout: float) -> bool:
        return self.current.wait(timeout)

    def _health(self, ok: bool) -> None:
        if ok != self.reachable:
            log.warning("budgets: usage topic %s", "reachable" if ok else
                        "unreachable: budgets with on_kafka_down=fail_closed refuse until it is back")
        self.reachable = ok

    def _load(self) -> None:
        assert self.loader is not None
        client = self.loader()
        totals = committed_totals(client, self.accounts(), self.now, self.cutoff)
        self.inbox.append(("load", totals))
        self.loaded = True
        log.info("budgets: period-to-date spend loaded for %d budgets (events started before %s)", len(totals),
                 datetime.fromtimestamp(self.cutoff, UTC).isoformat())

    def _assign(self) -> None:
        meta = self.consumer.list_topics(self.topic, timeout=2.0)
        parts = meta.topics[self.topic].partitions if self.topic in meta.topics else {}
        if not parts:
            raise KafkaException(f"topic {self.topic} has no partitions yet")
        wanted = [TopicPartition(self.topic, p, int(self.cutoff * 1000)) for p in parts]
        found = self.consumer.offsets_for_times(wanted, timeout=5.0)
        for t in found:  # offset -1: no message at or after the cutoff: start at the end, nothing to catch up
            if t.offset >= 0:
                end = self.consumer.get_watermark_offsets(TopicPartition(self.topic, t.partition), timeout=5.0)[1]
                if end > t.offset:
                    self.behind[t.partition] = end
        self.consumer.assign([TopicPartition(t.topic, t.partition, t.offset if t.offset >= 0 else -1)
                              for t in found])
        self.assigned = True
        self._caught_up({})

    def _step(self) -> bool:
        """Load, assign, or probe the broker; False when that failed (then wait and retry)."""
        try:
            if not self.loaded:
                self._load()
            if not self.assigned:
                self._assign()
            else:
                self.consumer.list_topics(self.topic, timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - ClickHouse or Kafka unreachable: retried, the ledger not current
            log.info("budgets: %s: %s; retrying", type(exc).__name__, exc)
            return False
        return True

    def _run(self) -> None:
        checked = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - checked >= HEALTH_EVERY_S or not self.assigned:
                checked = now
                ok = self._step()
                self._health(ok)
                if not ok:
                    self.stopping.wait(0.5)
                    continue
            batch: list[Any] = []
            read: dict[int | None, int | None] = {}
            for message in self.consumer.consume(num_messages=500, timeout=0.2):
                read[message.partition()] = message.offset()
                value = message.value()
                if message.error() is not None or value is None:
                    continue
                try:
                    event, cost = self.costs.of_event(value)
                except Exception:  # noqa: BLE001 - the pricer dead-letters it; the budget cannot count it
                    log.warning("budgets: a usage event on %s could not be decoded or priced", self.topic)
                    continue
                batch.append((str(event.event_id), scopes_of(event), cost, started_of(event), ended_of(event)))
            if batch:  # the arrival time: from here the next check counts them (the bound's d ends here)
                # Catch-up at start (None) is the spend loaded before serving, not propagation: d is measured on
                # events that arrived while this replica was current.
                self.inbox.append(("events", (time.time() if self.current.is_set() else None, batch)))
            if self.behind:
                self._caught_up(read)

    def _caught_up(self, read: dict[int | None, int | None]) -> None:
        """Drop partitions read up to their end offset at start; once none is behind, the ledger is current.
        (Set after the batch is in the inbox, and the gate drains the inbox before it checks.)"""
        for partition, offset in read.items():
            if offset is not None and partition in self.behind and offset + 1 >= self.behind[partition]:
                del self.behind[partition]
        if not self.behind and not self.current.is_set():
            self.current.set()
            log.info("budgets: ledger current (spend loaded, usage topic read to its end at start)")


def committed_totals(client: Any, accounts: list[Any], now: float, cutoff: float) -> list[tuple[str, float, int]]:
    """(budget name, period start, units spent before the cutoff) for each account, from ClickHouse."""
    totals = []
    for account in accounts:
        budget = account.budget
        start = budget_window(budget, datetime.fromtimestamp(now, UTC)).start.timestamp()
        result = client.query(spend_sql(budget.scope), parameters={
            "value": budget.scope_value, "start": int(start * 1000), "cutoff": int(max(start, cutoff) * 1000)})
        text = result.result_rows[0][0] if result.result_rows else None
        totals.append((budget.name, start, to_units(Decimal(text)) if text not in (None, "", "\\N") else 0))
    return totals


def ended_of(event: Any) -> float:
    ended = event.ended_at
    if isinstance(ended, str):
        ended = datetime.fromisoformat(ended.replace("Z", "+00:00"))
    return float(ended.timestamp())
