"""Alerts: the rules (pure), and the FastStream consumer under TestKafkaBroker posting to a real HTTP webhook on
loopback. Costs come from the pricer's own price book (gpt-4o list price), never typed into the code under test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from aiohttp import web
from faststream.confluent import TestKafkaBroker
from faststream.confluent.annotations import KafkaMessage

from aimeter.alerts.app import Alerter, fired_log, make_broker, run_alerter
from aimeter.alerts.fired import ALERTS_TOPIC
from aimeter.alerts.rules import HOUR, Rules, spike, thresholds_crossed
from aimeter.alerts.state import AlertState, Spend
from aimeter.alerts.webhook import Webhook
from aimeter.budgets.model import Budget, Enforcement, Period, ScopeKind, budget_window
from aimeter.config import parse_config
from aimeter.events import USAGE_TOPIC, TokenUsage, UsageEvent
from aimeter.pricer.pricebook import PriceBook

BOOK = PriceBook(parse_config("""
backends:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
models:
  gpt-4o: {backend: openai}
"""))
NOW = datetime(2026, 11, 15, 12, 10, tzinfo=UTC)
RULES = Rules(spike_grace=timedelta(minutes=5))
# The webhook receiver fixture serves on the session's loop: the tests that use it run there too.
on_session_loop = pytest.mark.asyncio(loop_scope="session")
SOFT = Budget("search-soft", ScopeKind.TEAM, "search", Decimal(100), Period.MONTH, "UTC", Enforcement.SOFT)


def usage_event(output_tokens: int, *, team: str = "search", at: datetime = NOW - timedelta(minutes=30),
                event_id: uuid.UUID | None = None) -> UsageEvent:
    return UsageEvent(event_id=event_id or uuid.uuid4(), started_at=at, ended_at=at, api="openai.chat",
                      backend="openai", provider="openai", deployment="proprietary", model_requested="gpt-4o",
                      status="ok", http_status=200, usage_source="reported",
                      usage=TokenUsage(output_tokens=output_tokens), attribution={"team": team})


def tokens_for(usd: Decimal) -> int:
    """Output tokens of gpt-4o that cost ``usd`` at its list price, as the price book says."""
    per_million = BOOK.price(usage_event(1_000_000)).cost_usd
    assert per_million
    return int(usd / per_million * 1_000_000)


class Receiver:
    """A real HTTP webhook on 127.0.0.1 (port 0): records every post; answers 500 to the first ``fail`` posts."""

    def __init__(self, fail: int = 0, delay_s: float = 0.0) -> None:
        self.fail = fail
        self.delay_s = delay_s
        self.attempts = 0
        self.payloads: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.json()
        await asyncio.sleep(self.delay_s)
        if self.attempts <= self.fail:
            return web.Response(status=500, text="try later")
        self.payloads.append(body)
        return web.Response(text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/services/T0/B0/secret-token", self.handle)  # a Slack webhook's path is its secret
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/services/T0/B0/secret-token"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def keys(self) -> list[str]:
        return [p["alert_id"] for p in self.payloads]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def settle(alerter: Alerter, until: float = 5.0) -> None:
    """Wait until every decided alert has been delivered (or fail after ``until`` seconds)."""
    deadline = asyncio.get_running_loop().time() + until
    while alerter.queue.qsize() or alerter.state.pending:
        assert asyncio.get_running_loop().time() < deadline, f"still pending: {alerter.state.pending}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def consumer(url: str, fired: set[str] = frozenset(), budgets: tuple[Budget, ...] = (SOFT,),
                   webhook: Webhook | None = None) -> AsyncIterator[tuple[Alerter, object, list[str]]]:
    """The alerts app under TestKafkaBroker: yields the alerter, the test broker and the fired log's keys."""
    state = AlertState(budgets, RULES, since=NOW - HOUR, now=NOW)
    state.load_fired(fired)
    hook = webhook or Webhook(url, backoff_s=0.01)
    alerter = Alerter(state, BOOK, hook.post, lambda: NOW)
    broker = make_broker("127.0.0.1:1", alerter, "alerts-test", since=None)
    alerter.keep = fired_log(broker)
    log: list[str] = []

    @broker.subscriber(ALERTS_TOPIC)
    async def fired_records(message: KafkaMessage) -> None:
        log.append(json.loads(message.body)["key"])

    async with TestKafkaBroker(broker) as test_broker:
        delivering = asyncio.ensure_future(alerter.deliver_forever())
        try:
            yield alerter, test_broker, log
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
            await hook.close()


async def send(test_broker, event: UsageEvent) -> None:
    await test_broker.publish(event.model_dump_json().encode(), USAGE_TOPIC)


# -- the rules, pure
def test_thresholds_fire_lowest_first_and_only_once_reached():
    window = budget_window(SOFT, NOW)
    assert thresholds_crossed(SOFT, window, Decimal("49.99"), RULES) == []
    crossed = thresholds_crossed(SOFT, window, Decimal(80), RULES)
    assert [a.fields["threshold_pct"] for a in crossed] == ["50", "80"]
    assert crossed[0].key == f"budget/search-soft/{window.start.isoformat()}/50"
    assert crossed[1].payload()["text"].startswith("Budget 'search-soft' (team search) reached 80%: $80.00 of $100.00")


def test_amounts_under_a_cent_are_not_shown_as_zero():
    tiny = Budget("tiny", ScopeKind.USER, "bob", Decimal("0.0005"), Period.DAY, enforcement=Enforcement.SOFT)
    alert = thresholds_crossed(tiny, budget_window(tiny, NOW), Decimal("0.00036"), RULES)[0]
    assert "reached 50%: $0.00036 of $0.0005 (72.0%) this day" in alert.text


def test_a_zero_budget_fires_on_any_spend_and_never_on_none():
    zero = Budget("free", ScopeKind.USER, "bob", Decimal(0), enforcement=Enforcement.SOFT)
    window = budget_window(zero, NOW)
    assert thresholds_crossed(zero, window, Decimal(0), RULES) == []
    assert len(thresholds_crossed(zero, window, Decimal("0.01"), RULES)) == 3


def test_spike_needs_both_the_factor_and_the_floor():
    hour = datetime(2026, 11, 15, 11, tzinfo=UTC)
    trailing = {hour - HOUR * i: Decimal(4) for i in range(1, 25)}  # $4/h for a day
    assert spike("search", hour, {**trailing, hour: Decimal(12)}, RULES) is None  # 3x: not above it
    alert = spike("search", hour, {**trailing, hour: Decimal("12.01")}, RULES)
    assert alert is not None
    assert alert.key == "spike/search/2026-11-15T11:00:00+00:00"
    assert alert.fields["trailing_mean_usd"] == "4"
    quiet = {hour - HOUR * i: Decimal("0.1") for i in range(1, 25)}
    assert spike("search", hour, {**quiet, hour: Decimal("9.99")}, RULES) is None  # 100x, under the $10 floor
    assert spike("search", hour, {hour: Decimal(10)}, RULES) is not None  # no history: the floor decides


def test_state_counts_each_event_once_and_ignores_what_the_ledger_totals_hold():
    state = AlertState([SOFT], RULES, since=NOW - HOUR, now=NOW)
    spend = Spend(uuid.uuid4(), NOW - timedelta(minutes=5), Decimal(30), "search")
    state.add(spend)
    state.add(spend)
    state.add(Spend(uuid.uuid4(), NOW - timedelta(hours=2), Decimal(30), "search"))  # before since: in the totals
    state.add(Spend(uuid.uuid4(), NOW - timedelta(minutes=5), Decimal(30), "research"))  # not this budget's scope
    assert state.spent["search-soft"] == Decimal(30)


def test_hard_budgets_never_alert():
    hard = Budget("search-hard", ScopeKind.TEAM, "search", Decimal(1))
    state = AlertState([hard], RULES, since=NOW - HOUR, now=NOW)
    assert state.add(Spend(uuid.uuid4(), NOW, Decimal(5), "search")) == []


def test_a_new_period_starts_from_zero_and_fires_again():
    daily = Budget("daily", ScopeKind.TEAM, "search", Decimal(10), Period.DAY, "Europe/Paris", Enforcement.SOFT)
    state = AlertState([daily], RULES, since=NOW - HOUR, now=NOW)
    first = state.add(Spend(uuid.uuid4(), NOW, Decimal(6), "search"))
    for alert in first:
        state.delivered(alert.key)
    tomorrow = NOW + timedelta(days=1)
    state.tick(tomorrow)
    assert state.spent["daily"] == 0
    again = state.add(Spend(uuid.uuid4(), tomorrow, Decimal(6), "search"))
    assert [a.fields["threshold_pct"] for a in again] == ["50"]
    assert again[0].key != first[0].key
    assert again[0].fields["period_start"] == "2026-11-15T23:00:00+00:00"  # midnight in Paris, in UTC


# -- the consumer, under TestKafkaBroker
@on_session_loop
async def test_each_threshold_fires_once(receiver: Receiver):
    async with consumer(receiver.url) as (alerter, broker, log):
        for usd in ("30", "25", "10", "20", "5", "12"):  # 30, 55, 65, 85, 90, 102 % of $100
            await send(broker, usage_event(tokens_for(Decimal(usd))))
            await settle(alerter)
    window = budget_window(SOFT, NOW)
    assert receiver.keys == [f"budget/search-soft/{window.start.isoformat()}/{pct}" for pct in (50, 80, 100)]
    assert log == receiver.keys
    assert receiver.payloads[0]["text"].startswith("Budget 'search-soft' (team search) reached 50%")
    assert receiver.payloads[0]["threshold_pct"] == "50"


@on_session_loop
async def test_a_redelivered_event_neither_double_counts_nor_refires(receiver: Receiver):
    event = usage_event(tokens_for(Decimal(60)))
    async with consumer(receiver.url) as (alerter, broker, _log):
        await send(broker, event)
        await send(broker, event)  # Kafka's at-least-once: the same event again
        await settle(alerter)
        spent = alerter.state.spent["search-soft"]
    assert spent == BOOK.price(event).cost_usd
    assert [p["threshold_pct"] for p in receiver.payloads] == ["50"]  # 120% would also fire 80 and 100


@on_session_loop
async def test_an_event_that_is_not_a_usage_event_is_skipped(receiver: Receiver):
    async with consumer(receiver.url) as (alerter, broker, _log):
        await broker.publish(b'{"event_id": "nope"}', USAGE_TOPIC)
        await send(broker, usage_event(tokens_for(Decimal(55))))
        await settle(alerter)
    assert alerter.skipped == 1
    assert [p["threshold_pct"] for p in receiver.payloads] == ["50"]


@on_session_loop
async def test_a_restart_does_not_refire(receiver: Receiver):
    event = usage_event(tokens_for(Decimal(60)))
    async with consumer(receiver.url) as (alerter, broker, log):
        await send(broker, event)
        await settle(alerter)
    assert len(receiver.payloads) == 1
    # The next process starts from the fired log, and sees the spend again (the ledger, a redelivery).
    async with consumer(receiver.url, fired=set(log)) as (alerter, broker, log2):
        await send(broker, usage_event(tokens_for(Decimal(60))))
        await settle(alerter)
        assert log2 == []
        await send(broker, usage_event(tokens_for(Decimal(25))))
        await settle(alerter)
    assert [p["threshold_pct"] for p in receiver.payloads] == ["50", "80"]


@on_session_loop
async def test_a_failing_webhook_is_retried_and_posted_once(caplog):
    receiver = await Receiver(fail=3).start()
    try:
        async with consumer(receiver.url) as (alerter, broker, log):
            await send(broker, usage_event(tokens_for(Decimal(55))))
            await settle(alerter)
            await send(broker, usage_event(tokens_for(Decimal(1))))  # decided again? it is already pending/fired
            await settle(alerter)
    finally:
        await receiver.stop()
    assert receiver.attempts == 4
    assert [p["threshold_pct"] for p in receiver.payloads] == ["50"]
    assert len(log) == 1
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3
    assert "answered 500" in retries[0]
    assert "secret-token" not in caplog.text  # the log names the host, never the webhook's path


@on_session_loop
async def test_the_spike_rule_fires_once_per_team_hour(receiver: Receiver):
    async with consumer(receiver.url, budgets=()) as (alerter, broker, _log):
        last = datetime(2026, 11, 15, 11, tzinfo=UTC)  # the last complete hour at NOW (12:10, grace 5 min)
        for i in range(1, 25):
            alerter.state.load_hour("research", last - HOUR * i, Decimal(2))
        await send(broker, usage_event(tokens_for(Decimal(7)), team="research", at=last + timedelta(minutes=10)))
        alerter.tick()
        await settle(alerter)
        assert receiver.payloads == []  # $7 is over 3x $2 but under the $10 floor
        await send(broker, usage_event(tokens_for(Decimal(5)), team="research", at=last + timedelta(minutes=20)))
        alerter.tick()
        alerter.tick()
        await settle(alerter)
    assert receiver.keys == ["spike/research/2026-11-15T11:00:00+00:00"]
    assert Decimal(receiver.payloads[0]["spent_usd"]) > 10


@on_session_loop
async def test_an_orderly_stop_finishes_the_alert_in_flight_and_starts_no_other():
    receiver = await Receiver(delay_s=0.3).start()
    state = AlertState([SOFT], RULES, since=NOW - HOUR, now=NOW)
    hook = Webhook(receiver.url)
    alerter = Alerter(state, BOOK, hook.post, lambda: NOW)
    broker = make_broker("127.0.0.1:1", alerter, "alerts-test", since=None)
    alerter.keep = fired_log(broker)
    log: list[str] = []

    @broker.subscriber(ALERTS_TOPIC)
    async def fired_records(message: KafkaMessage) -> None:
        log.append(json.loads(message.body)["key"])

    try:
        async with TestKafkaBroker(broker) as test_broker:
            stop = asyncio.Event()
            running = asyncio.ensure_future(run_alerter(test_broker, alerter, 60, stop))
            await send(test_broker, usage_event(tokens_for(Decimal(90))))  # decides 50% and 80%
            while receiver.attempts == 0:
                await asyncio.sleep(0.01)
            stop.set()  # SIGTERM while the 50% post waits for its answer
            await running
    finally:
        await hook.close()
        await receiver.stop()
    window = budget_window(SOFT, NOW)
    assert receiver.keys == [f"budget/search-soft/{window.start.isoformat()}/50"]
    assert log == receiver.keys  # posted and recorded: the next start will not post it again
    assert state.pending == {f"budget/search-soft/{window.start.isoformat()}/80"}  # decided again next start


# -- the budget-use panel's table rows, pure
def test_budget_window_rows_follow_the_budget_calendar_across_dst():
    from aimeter.alerts.budget_table import window_rows  # noqa: PLC0415

    daily = Budget("paris", ScopeKind.TEAM, "search", Decimal(5), Period.DAY, "Europe/Paris", Enforcement.SOFT)
    monthly = Budget("m", ScopeKind.USER, "bob", Decimal(50), Period.MONTH)
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    rows = window_rows([daily, monthly], at)
    days = [r for r in rows if r[0] == "paris"]
    months = [r for r in rows if r[0] == "m"]
    assert len(days) == 401  # the current day and every one starting within the next 400 days
    assert len(months) == 14  # March 2026 .. April 2027: every window starting before now + 400 days
    assert {r[7].hour for r in days} == {23, 22}  # Paris midnight: 23:00 UTC in winter, 22:00 in summer
    spans = {r[8] - r[7] for r in days}
    assert spans == {timedelta(hours=24), timedelta(hours=23), timedelta(hours=25)}  # the two DST days
    assert all(a[8] == b[7] for a, b in itertools.pairwise(days))  # contiguous, no gap or overlap
    assert {r[9] for r in rows} == {at}
