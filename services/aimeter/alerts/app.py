"""The alerts consumer: FastStream on the usage topic, the state's decisions posted one at a time.

Off the request path (the gateway never waits for it), so it uses FastStream rather than the pricer's hand-run
confluent-kafka loop. Each event is priced as the pricer prices it: its memoized tariffs over the same price book
(config, overrides, stored GPU cost history), ``PriceBook.price`` where a tariff defers. So a budget counts what
the ledger will count, as soon as the gateway emits the event, without waiting for the pricer's insert.

Exactly once per alert: an alert is decided once (:class:`AlertState` keeps it pending), posted until the
webhook answers 2xx, then written to the compacted log (acks=all) and only then marked fired. If the process
dies after the 2xx and before the log has the record, the next start posts it again: that is the one window,
and the payload's ``alert_id`` lets a receiver drop that duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from confluent_kafka import Consumer, TopicPartition
from faststream.confluent import KafkaBroker
from faststream.confluent.annotations import KafkaMessage

from aimeter.alerts.fired import ALERTS_TOPIC, record
from aimeter.alerts.rules import Alert
from aimeter.alerts.state import AlertState, Spend
from aimeter.budgets.ledger import to_usd
from aimeter.budgets.pricing import Costs
from aimeter.events import USAGE_TOPIC
from aimeter.pricer.pricebook import PriceBook

log = logging.getLogger("aimeter.alerts")
CLOCK_SKEW = timedelta(minutes=5)  # gateways' clocks (Kafka timestamps) may run behind ours


def spend_of(raw: bytes, costs: Costs) -> Spend:
    """One encoded usage event as the alerts count it, priced as the pricer prices it (its memoized tariffs, else
    ``PriceBook.price``: ``Costs.of_event``); raises ValueError for an event that is not a valid UsageEvent v1."""
    event, units = costs.of_event(raw)
    a = event.attribution
    started = event.started_at if isinstance(event.started_at, datetime) else datetime.fromisoformat(event.started_at)
    return Spend(UUID(str(event.event_id)), started.astimezone(UTC), None if units is None else to_usd(units),
                 a.team, a.project, a.user, a.api_key_id)


class Alerter:
    """The state, the pricer's costs and the way out (``post`` to the webhook, ``keep`` in the fired log)."""

    def __init__(self, state: AlertState, book: PriceBook, post: Callable[[Alert], Awaitable[None]],
                 clock: Callable[[], datetime]) -> None:
        self.state = state
        self.costs = Costs(book)
        self.post = post
        self.keep: Callable[[Alert], Awaitable[None]] | None = None  # the fired log: :func:`fired_log`
        self.clock = clock
        self.queue: asyncio.Queue[Alert] = asyncio.Queue()
        self.delivered: list[str] = []
        self.skipped = 0
        self.idle = asyncio.Event()  # clear while an alert is between its post and its record
        self.idle.set()
        self.stopping = False  # no new alert is started once set

    def decided(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            log.info("alert %s decided: %s", alert.key, alert.text)
            self.queue.put_nowait(alert)

    def on_usage(self, body: bytes) -> None:
        try:
            spend = spend_of(body, self.costs)
        except ValueError as exc:  # the pricer dead-letters it; it has no cost to count here either
            self.skipped += 1
            log.warning("alerts: skipped an event that is not a valid UsageEvent v1 (%s)", str(exc)[:200])
            return
        self.decided(self.state.add(spend))

    def tick(self) -> None:
        self.decided(self.state.tick(self.clock()))

    async def deliver_forever(self) -> None:
        """One alert at a time, in decision order: post (retried until 2xx), keep, then mark fired."""
        while not self.stopping:
            alert = await self.queue.get()
            if self.stopping:  # taken while stopping: left for the next start, which decides it again
                return
            self.idle.clear()
            try:
                await self.post(alert)
                if self.keep is None:
                    raise RuntimeError("Alerter.keep is not set: no fired log to record delivered alerts in")
                await self.keep(alert)
            finally:
                self.idle.set()
            self.state.delivered(alert.key)
            self.delivered.append(alert.key)
            log.info("alert %s delivered", alert.key)

    async def tick_forever(self, every_s: float) -> None:
        while True:
            self.tick()
            await asyncio.sleep(every_s)


def seek_to(since: datetime) -> Callable[[Consumer, list[TopicPartition]], None]:
    """An ``on_assign`` that starts each partition at the first message produced at ``since`` (less the clock
    skew margin): everything before is in the ledger's totals, and committed offsets are not needed."""
    stamp = int((since - CLOCK_SKEW).timestamp() * 1000)

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        wanted = [TopicPartition(p.topic, p.partition, stamp) for p in partitions]
        consumer.assign(consumer.offsets_for_times(wanted, timeout=30))  # -1 (the end) where nothing is newer

    return on_assign


def make_broker(bootstrap: str, alerter: Alerter, group: str, since: datetime | None) -> KafkaBroker:
    """The FastStream broker: the usage subscriber, and the publisher of the fired log (acks=all)."""
    broker = KafkaBroker(bootstrap, acks="all", enable_idempotence=True, log_level=logging.DEBUG)
    on_assign = seek_to(since) if since is not None else None

    @broker.subscriber(USAGE_TOPIC, group_id=group, auto_offset_reset="earliest", on_assign=on_assign)
    async def usage(message: KafkaMessage) -> None:
        alerter.on_usage(message.body)

    return broker


def fired_log(broker: KafkaBroker) -> Callable[[Alert], Awaitable[None]]:
    """Record a delivered alert in the compacted log; returns once the brokers acknowledged it (acks=all)."""
    async def keep(alert: Alert) -> None:
        await broker.publish(record(alert), ALERTS_TOPIC, key=alert.key.encode())

    return keep


async def run_alerter(broker: KafkaBroker, alerter: Alerter, tick_s: float, stop: asyncio.Event,
                      grace_s: float = 10.0) -> None:
    """Until ``stop`` is set: consume, tick and deliver. An alert being delivered when it is set gets ``grace_s``
    to be posted and recorded, so an orderly stop does not open the post-then-crash window."""
    await broker.start()
    tasks = [asyncio.ensure_future(alerter.tick_forever(tick_s)), asyncio.ensure_future(alerter.deliver_forever())]
    try:
        await stop.wait()
    finally:
        tasks[0].cancel()
        alerter.stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(alerter.idle.wait(), grace_s)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await broker.stop()
