"""The alert state's memory bound: the consumer under TestKafkaBroker posting to a real HTTP webhook on loopback,
with a small ``seen_ids`` so the bound is reached in a few hundred events. Costs come from the pricer's own price
book (gpt-4o list price), never typed into the code under test."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from faststream.confluent import TestKafkaBroker

from aimeter.alerts.app import Alerter, fired_log, make_broker
from aimeter.alerts.rules import HOUR
from aimeter.alerts.state import AlertState, Spend
from aimeter.alerts.webhook import Webhook
from aimeter.events import UsageEvent
from tests.unit.test_alerts import BOOK, NOW, RULES, SOFT, Receiver, send, settle, tokens_for, usage_event

on_session_loop = pytest.mark.asyncio(loop_scope="session")
BOUND = 50


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@contextlib.asynccontextmanager
async def consumer(url: str, state: AlertState) -> AsyncIterator[tuple[Alerter, object]]:
    """The alerts app over ``state`` under TestKafkaBroker: yields the alerter and the test broker."""
    webhook = Webhook(url, backoff_s=0.01)
    alerter = Alerter(state, BOOK, webhook.post, lambda: NOW)
    broker = make_broker("127.0.0.1:1", alerter, "alerts-state-test", since=None)
    alerter.keep = fired_log(broker)
    async with TestKafkaBroker(broker) as test_broker:
        delivering = asyncio.ensure_future(alerter.deliver_forever())
        try:
            yield alerter, test_broker
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
            await webhook.close()


def live(i: int, usd: str = "0.01") -> UsageEvent:
    """An event that started after the process did (outside the recount window): only ``seen`` remembers it."""
    return usage_event(tokens_for(Decimal(usd)), at=NOW + timedelta(seconds=i))


def cost(event: UsageEvent) -> Decimal:
    priced = BOOK.price(event).cost_usd
    assert priced is not None
    return priced


@on_session_loop
async def test_the_seen_ids_never_exceed_their_bound(hook: Receiver):
    state = AlertState([SOFT], RULES, since=NOW - HOUR, now=NOW, seen_ids=BOUND)
    events = [live(i) for i in range(10 * BOUND)]
    sizes = []
    async with consumer(hook.url, state) as (alerter, broker):
        for event in events:
            await send(broker, event)
            sizes.append(len(state.seen) + len(state.recount))
        await settle(alerter)
    assert max(sizes) == BOUND  # reached, never passed: 500 events, 50 ids
    assert state.spent["search-soft"] == sum(cost(e) for e in events)  # each counted once all the same


@on_session_loop
async def test_a_duplicate_within_the_bound_is_counted_once(hook: Receiver):
    state = AlertState([SOFT], RULES, since=NOW - HOUR, now=NOW, seen_ids=BOUND)
    big = live(0, "45")
    others = [live(i) for i in range(1, BOUND)]  # 49 other ids: the big one is still the 50th remembered
    async with consumer(hook.url, state) as (alerter, broker):
        await send(broker, big)
        for event in others:
            await send(broker, event)
        await send(broker, big)  # redelivered within the bound
        await settle(alerter)
    assert state.spent["search-soft"] == cost(big) + sum(cost(e) for e in others)
    assert hook.payloads == []  # $45.49 of $100: counted twice it would be over 50 %


@on_session_loop
async def test_a_duplicate_beyond_the_bound_counts_twice_so_an_alert_fires_early(hook: Receiver):
    """The documented limit: the id was evicted, so the copy counts again; spend is over, never under."""
    state = AlertState([SOFT], RULES, since=NOW - HOUR, now=NOW, seen_ids=BOUND)
    big = live(0, "30")
    others = [live(i) for i in range(1, BOUND + 1)]  # 50 other ids: the big one is evicted
    async with consumer(hook.url, state) as (alerter, broker):
        await send(broker, big)
        for event in others:
            await send(broker, event)
        await send(broker, big)
        await settle(alerter)
    assert state.spent["search-soft"] == 2 * cost(big) + sum(cost(e) for e in others)
    assert [p["threshold_pct"] for p in hook.payloads] == ["50"]


@on_session_loop
async def test_ledger_rows_of_the_recount_window_are_never_counted_twice_whatever_the_bound(hook: Receiver):
    """Start-up: the ledger's rows since ``since`` come one by one (as ``load_ledger`` adds them), then the topic
    replays the same events from ``since``: four times the bound of them, and none counts twice."""
    state = AlertState([SOFT], RULES, since=NOW - HOUR, now=NOW, seen_ids=BOUND)
    recent = [usage_event(tokens_for(Decimal("0.2")), at=NOW - HOUR + timedelta(seconds=10 * i))
              for i in range(4 * BOUND)]
    for event in recent:  # the ledger's rows, priced by the pricer
        state.add(Spend(uuid.UUID(str(event.event_id)), event.started_at, cost(event), "search"))
    from_ledger = state.spent["search-soft"]
    kept = len(state.recount)  # whatever the bound: the topic may replay them in any order
    new = [live(i) for i in range(BOUND)]
    async with consumer(hook.url, state) as (alerter, broker):
        for event in [*reversed(recent), *new]:  # the replay, then what happens after the start
            await send(broker, event)
        await settle(alerter)
    assert from_ledger == sum(cost(e) for e in recent)
    assert state.spent["search-soft"] == from_ledger + sum(cost(e) for e in new)
    assert hook.payloads == []  # $40.50 of $100: once the replay counted twice it would be over 50 %
    assert kept == 4 * BOUND
    assert len(state.recount) == 0  # each shown twice: handed to the bounded memory
    assert len(state.seen) == BOUND


def test_the_recount_window_is_forgotten_once_older_than_every_window_and_the_spike_horizon():
    state = AlertState([], RULES, since=NOW - HOUR, now=NOW, seen_ids=BOUND)
    state.add(Spend(uuid.uuid4(), NOW - timedelta(minutes=30), Decimal(1), "search"))
    assert len(state.recount) == 1
    state.tick(NOW + timedelta(hours=RULES.spike_trailing_hours + 2))
    assert len(state.recount) == 0


def test_a_bound_under_one_id_is_refused():
    with pytest.raises(ValueError, match="seen_ids must be at least 1"):
        AlertState([SOFT], RULES, since=NOW - HOUR, now=NOW, seen_ids=0)
