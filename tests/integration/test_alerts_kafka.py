"""The alerts consumer on the real broker, the real ledger engine (chDB) and a real HTTP webhook on loopback.

The ledger already holds some of the team's events (the pricer wrote them), the usage topic carries those same
events again plus new ones and a redelivery; the thresholds must fire exactly once each, and a second process
reading the fired log (the compacted topic ai.alerts.v1) and the same topic again must not fire them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from aimeter.alerts.app import run_alerter
from aimeter.alerts.run import prepare
from aimeter.budgets.model import Budget, Enforcement, Period, ScopeKind, budget_window
from aimeter.events import USAGE_TOPIC, UsageEvent
from aimeter.kafka_admin import ensure_topics
from aimeter.settings import Settings
from tests.integration.chdb_fixture import ingest
from tests.unit.test_alerts import BOOK, Receiver, tokens_for, usage_event

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def produce(bootstrap: str, events: list[UsageEvent], key: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for event in events:
        producer.produce(USAGE_TOPIC, event.model_dump_json().encode(), key=key.encode())
    assert producer.flush(30) == 0


async def run_until(settings: Settings, budget: Budget, client: Client, bootstrap: str, receiver: Receiver,
                    wanted: int, then: list[UsageEvent] | None = None) -> int:
    """One alerts process: start it, wait for ``wanted`` posts in all (sending ``then`` once it consumes), stop.
    Returns how many alerts the fired log held at its start."""
    broker, alerter, webhook, fired = await prepare(settings, [budget], BOOK, client, bootstrap=bootstrap,
                                                    now=datetime.now(UTC))
    stop = asyncio.Event()
    running = asyncio.ensure_future(run_alerter(broker, alerter, 0.5, stop))
    try:
        if then:
            produce(bootstrap, then, budget.scope_value)
        for _ in range(600):
            if len(receiver.payloads) >= wanted and not alerter.state.pending:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # room for a wrong extra post to show
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await webhook.close()
    return fired


async def test_thresholds_fire_once_across_ledger_kafka_redelivery_and_restart(
        kafka_bootstrap: str, metering_store: Client):
    ensure_topics(kafka_bootstrap)
    team = f"alerts-{uuid.uuid4().hex[:8]}"
    budget = Budget(f"{team}-monthly", ScopeKind.TEAM, team, Decimal(100), Period.MONTH, "UTC", Enforcement.SOFT)
    receiver = await Receiver().start()
    now = datetime.now(UTC)
    window = budget_window(budget, now)
    settings = Settings(alerts_webhook_url=receiver.url, alerts_group=f"alerts-{team}",
                        alerts_spike_floor_usd=Decimal(10**9))  # other tests' traffic shares the topic
    try:
        old = usage_event(tokens_for(Decimal(30)), team=team, at=max(window.start, now - timedelta(hours=2)))
        recent = usage_event(tokens_for(Decimal(25)), team=team, at=max(window.start, now - timedelta(minutes=10)))
        ingest(metering_store, [old, recent], BOOK)  # the pricer got there first: $55 in the ledger
        new = usage_event(tokens_for(Decimal(30)), team=team, at=now)
        # The topic carries the ledger's events again, a new one, and that one redelivered: $85 in all.
        produce(kafka_bootstrap, [old, recent, new, new], team)
        assert await run_until(settings, budget, metering_store, kafka_bootstrap, receiver, wanted=2) >= 0
        ours = [p for p in receiver.payloads if p.get("budget") == budget.name]
        assert [p["threshold_pct"] for p in ours] == ["50", "80"]
        assert Decimal(ours[1]["spent_usd"]) == sum(BOOK.price(e).cost_usd for e in (old, recent, new))

        # A restart: the same ledger and the same topic again, plus $20 more; only 100% may fire now.
        more = usage_event(tokens_for(Decimal(20)), team=team, at=datetime.now(UTC))
        fired = await run_until(settings, budget, metering_store, kafka_bootstrap, receiver, wanted=3, then=[more])
        assert fired >= 2
        ours = [p for p in receiver.payloads if p.get("budget") == budget.name]
        assert [p["threshold_pct"] for p in ours] == ["50", "80", "100"]
        assert len({p["alert_id"] for p in ours}) == 3
    finally:
        await receiver.stop()
