"""The budgets' hot path charges what the ledger charges: the worst-case rates a gate keeps per route equal the
pricer's tariff on every route of the pricer's own fast-path tests (tiers, non-whole rates, per-request fees,
discounts, batch, GPU, unpriced), are made again when the price book or the budgets settings change, and a settle
priced off the event loop commits the event's own cost and keeps its copy on the topic from counting twice."""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from aimeter.budgets.gate import BudgetGate
from aimeter.budgets.ledger import Ledger, Scopes, to_units
from aimeter.budgets.model import Budget, Period, ScopeKind
from aimeter.budgets.pricing import Costs, Route, Tags, WorstUsage, worst_rates
from aimeter.budgets.spec import BudgetsConfig
from aimeter.events import Attribution, Deployment, Status, TokenUsage, UsageSource
from aimeter.gateway.event_json import encode_usage_event
from aimeter.pricer.overrides_load import parse_overrides
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.tariff import Defer
from tests.unit.test_pricer_fastpath import BOOKS, CONFIG, ROUTES

COSTS = [Costs(book) for book in BOOKS]
MINUTES = st.one_of(
    st.datetimes(datetime(2026, 5, 30), datetime(2026, 12, 31)),  # noqa: DTZ001 - bounds are naive
    st.sampled_from([datetime(2026, 11, 15, 12, 30), datetime(2026, 11, 20), datetime(2026, 6, 1)])  # noqa: DTZ001
    .flatmap(lambda t: st.integers(-3, 3).map(lambda m: t + timedelta(minutes=m))),
).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:00.000000Z"))
# Around the tier thresholds of the pricer tests' cards (100k, 200k, 500k prompt tokens) and the small numbers.
TOKENS = st.one_of(st.integers(0, 3000), st.sampled_from([100_000, 200_000, 500_000]).flatmap(
    lambda t: st.integers(-2, 2).map(lambda d: t + d)), st.integers(0, 3_000_000))


@settings(max_examples=400, deadline=None)
@given(costs=st.sampled_from(COSTS), route=st.sampled_from(ROUTES), minute=MINUTES, batch=st.booleans(),
       api=st.sampled_from(["openai.chat", "anthropic.messages", "openai.embeddings"]), prompt=TOKENS,
       output=TOKENS)
def test_worst_rates_charge_what_the_tariff_charges(costs: Costs, route: tuple[str, ...], minute: str, batch: bool,
                                                    api: str, prompt: int, output: int) -> None:
    requested, _, backend, provider, deployment = route
    tags = Tags({"batch": "true"} if batch else {})
    at = Route(deployment, backend, provider, requested, "", api, tags, minute)
    tariff = costs.tariff(at)
    rates = None if tariff is None else worst_rates(tariff)
    expected = costs.worst_case(at, WorstUsage(prompt, output), tariff)
    if rates is None:  # the gate asks worst_case itself
        return
    try:
        found = rates.price(prompt, output)
    except Defer:  # likewise: the reference path decides past the exact bound
        return
    assert found == expected


GPT_4O = Route("proprietary", "openai", "openai", "gpt-4o", "", "openai.chat", Tags({}), "2026-12-06T12:30:00.000000Z")
NOW = datetime(2026, 12, 6, 12, 30, 15, tzinfo=UTC).timestamp()
WHO = Attribution(team="ml")


def gate_with(costs: Costs, config: BudgetsConfig) -> BudgetGate:
    budget = Budget("ml", ScopeKind.TEAM, "ml", Decimal(1000), Period.MONTH, "UTC")
    return BudgetGate(Ledger([budget]), costs, config)


def reserved(gate: BudgetGate, event_id: str, body: dict[str, object]) -> int:
    gate.reserve(event_id, WHO, backend_name="openai", backend=CONFIG.backends["openai"], model="gpt-4o",
                 api="openai.chat", body=body, body_bytes=400, now=NOW)
    return gate.pending[event_id].amount


def test_a_new_price_book_or_output_limit_is_used_at_once() -> None:
    body = {"model": "gpt-4o", "max_tokens": 500}
    list_price = Costs(PriceBook(CONFIG))
    gate = gate_with(list_price, BudgetsConfig())
    first = reserved(gate, "e1", body)
    assert first == list_price.worst_case(GPT_4O, WorstUsage(100, 500))

    discounted = Costs(PriceBook(CONFIG, parse_overrides(
        "discounts:\n  - {provider: openai, model: gpt-4o, percent: 50}\n", "overrides.yaml")))
    gate.costs = discounted  # same route, same minute: the kept rates must not be the old book's
    second = reserved(gate, "e2", body)
    assert second == discounted.worst_case(GPT_4O, WorstUsage(100, 500))
    assert second < first

    gate.config = BudgetsConfig(output_limit=64)  # no max_tokens in the body: the model's limit is reserved
    assert reserved(gate, "e3", {"model": "gpt-4o"}) == discounted.worst_case(GPT_4O, WorstUsage(100, 64))


def emitted(event_id: str, output_tokens: int) -> bytes:
    at = datetime.fromtimestamp(NOW, UTC)
    return encode_usage_event(
        event_id=event_id, gateway_id="gw", started_at=at, first_token_at=None, ended_at=at, api="openai.chat",
        backend="openai", provider="openai", deployment=Deployment.PROPRIETARY, model_requested="gpt-4o",
        model_served="gpt-4o-2024-08-06", stream=False, status=Status.OK, http_status=200,
        usage_source=UsageSource.REPORTED, usage=TokenUsage(input_tokens=90, output_tokens=output_tokens),
        backend_compute_seconds=None, attribution=WHO, usage_problem="", upstream_error_type="", usage_flags="",
        credential_id="", upstream_project="", service_tier="")


def test_settle_prices_off_the_loop_and_commits_the_events_cost_once() -> None:
    costs = Costs(PriceBook(CONFIG))
    gate = gate_with(costs, BudgetsConfig())
    account = gate.ledger.accounts()[0]
    ids = [f"0193a6f0-0000-7000-8000-{i:012x}" for i in range(50)]
    for event_id in ids:
        reserved(gate, event_id, {"max_tokens": 500})
    held = account.reserved
    loop = threading.get_ident()
    threads: set[int] = set()
    of_event = costs.of_event

    def watched(raw: bytes) -> object:
        threads.add(threading.get_ident())
        return of_event(raw)

    costs.of_event = watched  # type: ignore[method-assign] # records which thread prices (still the real pricing)
    payloads = {event_id: emitted(event_id, 10 + i) for i, event_id in enumerate(ids)}
    for event_id, payload in payloads.items():
        gate.settle(event_id, payload)
    assert loop not in threads  # settle() handed the events over without pricing them
    # The own event's copy from the topic, arriving before the worker's price is committed: not counted.
    assert not gate.ledger.apply(ids[0], Scopes(team="ml"), to_units(Decimal(1)), NOW)
    gate.flush()
    assert (account.reserved, account.in_flight) == (0, 0)
    assert held > 0
    assert account.committed == sum(of_event(p)[1] or 0 for p in payloads.values())


def test_status_for_get_budgets_never_prices_or_waits_on_the_calling_thread() -> None:
    """``GET /budgets`` runs on the gateway's loop: with the settle worker stuck, the answer comes at once and
    shows the stuck settles as still reserved (the handler awaits ``settled()`` itself, off the loop)."""
    costs = Costs(PriceBook(CONFIG))
    gate = gate_with(costs, BudgetsConfig())
    account = gate.ledger.accounts()[0]
    ids = [f"0193a6f0-0000-7000-8000-{i:012x}" for i in range(5)]
    for event_id in ids:
        reserved(gate, event_id, {"max_tokens": 500})
    stuck, caller, threads = threading.Event(), threading.get_ident(), set()
    of_event = costs.of_event

    def blocked(raw: bytes) -> object:
        threads.add(threading.get_ident())
        stuck.wait(5)
        return of_event(raw)

    costs.of_event = blocked  # type: ignore[method-assign] # a worker that cannot keep up (still the real pricing)
    for i, event_id in enumerate(ids):
        gate.settle(event_id, emitted(event_id, 10 + i))
    assert not gate.settled()
    started = time.monotonic()
    status = gate.status(NOW, flush=False)
    assert time.monotonic() - started < 0.5
    assert caller not in threads
    assert Decimal(status["budgets"][0]["reserved_usd"]) > 0  # still held: errs on the safe side
    stuck.set()
    gate.flush()
    assert gate.settled()
    assert (account.reserved, account.in_flight) == (0, 0)


def test_propagation_delay_is_measured_only_on_events_that_arrive_while_current() -> None:
    """The bound's d: events read while catching up at start (an hour-old backlog) are counted as spend but are no
    propagation delay; an event another replica ended 0.4 s before it arrived is."""
    gate = gate_with(Costs(PriceBook(CONFIG)), BudgetsConfig())
    account = gate.ledger.accounts()[0]
    old = (f"0193a6f0-0000-7000-8000-{1:012x}", Scopes(team="ml"), to_units(Decimal(1)), NOW - 3600, NOW - 3599)
    new = (f"0193a6f0-0000-7000-8000-{2:012x}", Scopes(team="ml"), to_units(Decimal(2)), NOW - 1, NOW - 0.4)
    follower = SimpleNamespace(ok=True, inbox=deque([("events", (None, [old])), ("events", (NOW, [new]))]))
    gate.drain(follower)  # type: ignore[arg-type] # the follower's inbox as sync.py fills it, without a broker
    assert account.committed == to_units(Decimal(3))
    assert abs(gate.max_delay_s - 0.4) < 1e-6  # epoch seconds in a float: ~1e-7 apart
