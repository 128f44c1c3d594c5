"""Gateway CPU per request spent on budgets, on the gateway's own code (no HTTP, no Kafka).

Per request of the benchmark's own chat body (``phases.body``) to gpt-4o, with four budgets applying to it (its
key, team, project and user) and set high so every request is admitted; requests go in blocks of 64 (reserve 64,
then settle them), so the gate holds as many in flight as a busy replica does, not the whole run:

* **loop**: what the gateway's event loop spends per request (``time.thread_time`` of the serving thread): the
  reserve with the worst case priced, the settle's hand-off of the emitted event, and committing its priced cost
  (``BudgetGate.refresh`` before the next check). The issue's target is 5 us. Split into **reserve** (with the
  commits of the previous block) and **settle** (the hand-off).
* **worker**: CPU the settle worker thread spends decoding and pricing the event as the pricer does, off the loop.
* **check**: the ledger's decision alone (``Ledger.reserve`` + ``Ledger.settle`` with known amounts).
* **none**: what every request pays when no budget applies to it.

Each block ends with ``time.sleep(0)`` (the GIL released, as the event loop does in every select()), and the gate
has a real topic follower (never started) whose state each check reads, as in production. The run also checks
the result: every reservation released and every request committed at the event's price.
``measure(n)`` returns the numbers (medians of 5 runs) for ``make bench``.

Measured (n = 100,000, ``nice -n 15 taskset -c 1``, the shared 2-core box at load 9-10 with an integration test
running; the code before and after in the same session, alternating, three runs each of medians of 5): loop
14.4-16.3 -> 4.0-4.7 us CPU per request (reserve 7.8-8.8 -> 3.2-3.8, settle 6.5-7.5 -> 0.8-1.0), the worker
4.7-5.5 us off the loop, check 3.4-4.7 -> 2.1-2.9, none applying 0.4-0.5 either way. docs/decisions.md says what
changed.

    .venv/bin/python -m benchmarks.budget_check [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from aimeter.budgets.gate import BudgetGate
from aimeter.budgets.ledger import Ledger, Scopes
from aimeter.budgets.model import Budget, Period, ScopeKind
from aimeter.budgets.pricing import Costs
from aimeter.budgets.spec import BudgetsConfig
from aimeter.budgets.sync import TopicFollower
from aimeter.config import parse_config
from aimeter.events import Attribution, Deployment, Status, TokenUsage, UsageSource
from aimeter.gateway.event_json import encode_usage_event
from aimeter.pricer.pricebook import PriceBook
from benchmarks import phases

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "http://127.0.0.1:1/v1", deployment: proprietary, provider: openai}
models:
  gpt-4o: {backend: openai}
""")
WHO = Attribution(team="bench", project="p", user="u", api_key_id="k")
HIGH = Decimal(10**9)
IN_FLIGHT = 64  # requests reserved before their events are emitted: a busy replica's concurrency
RUNS = 5


def _ledger() -> Ledger:
    return Ledger([Budget(f"b-{kind.value}", kind, value, HIGH, Period.MONTH, "Europe/Paris")
                   for kind, value in ((ScopeKind.KEY, "k"), (ScopeKind.TEAM, "bench"), (ScopeKind.PROJECT, "p"),
                                       (ScopeKind.USER, "u"))])


def _event(event_id: str, at: datetime) -> bytes:
    return encode_usage_event(
        event_id=event_id, gateway_id="bench", started_at=at, first_token_at=None, ended_at=at, api="openai.chat",
        backend="openai", provider="openai", deployment=Deployment.PROPRIETARY, model_requested="gpt-4o",
        model_served="gpt-4o", stream=False, status=Status.OK, http_status=200, usage_source=UsageSource.REPORTED,
        usage=TokenUsage(input_tokens=40, output_tokens=16), backend_compute_seconds=None, attribution=WHO,
        usage_problem="", upstream_error_type="", usage_flags="", credential_id="", upstream_project="",
        service_tier="")


_FOLLOWERS: list[TopicFollower] = []


def _follower(costs: Costs) -> TopicFollower:
    """A real topic follower, never started (its consumer closed at once: librdkafka logs one refused connect),
    marked current: each check reads its state and its empty inbox, as in production between two batches of other
    replicas' events. One per process."""
    if not _FOLLOWERS:
        follower = TopicFollower("127.0.0.1:1", costs, cutoff=time.time(), now=time.time(), loader=None,
                                 accounts=list)
        follower.consumer.close()
        follower.reachable = True
        follower.current.set()
        _FOLLOWERS.append(follower)
    return _FOLLOWERS[0]


def check_us(n: int) -> float:
    ledger, scopes, now = _ledger(), Scopes("k", "bench", "p", "u"), time.time()
    start = time.thread_time()
    for i in range(n):
        held = ledger.reserve(scopes, 5_000_000_000, now)
        assert held is not None
        ledger.settle(held, 1_000_000_000, str(i), now)
    return (time.thread_time() - start) / n * 1e6


def gate_us(n: int, budgets: bool) -> dict[str, float]:
    """us per request: on the loop (reserve, settle hand-off), and on the settle worker."""
    costs = Costs(PriceBook(CONFIG))
    ledger = _ledger() if budgets else Ledger()
    gate = BudgetGate(ledger, costs, BudgetsConfig(), _follower(costs))
    backend = CONFIG.backends["openai"]
    raw = phases.body(0)
    body, now = orjson.loads(raw), time.time()
    who = WHO if budgets else Attribution(team="other")
    payload = _event("0193a6f0-0000-7000-8000-000000000001", datetime.fromtimestamp(now, UTC))
    ids = [str(i) for i in range(n)]
    reserve_s = settle_s = 0.0
    cpu = time.process_time()
    for block in range(0, n, IN_FLIGHT):
        chunk = ids[block:block + IN_FLIGHT]
        start = time.thread_time()
        for event_id in chunk:
            gate.reserve(event_id, who, backend_name="openai", backend=backend, model="gpt-4o", api="openai.chat",
                         body=body, body_bytes=len(raw), now=now)
        reserved = time.thread_time()
        for event_id in chunk:
            gate.settle(event_id, payload)
        settled = time.thread_time()
        reserve_s, settle_s = reserve_s + reserved - start, settle_s + settled - reserved
        time.sleep(0)  # the GIL released once per block, as the event loop does in every select()
    start = time.thread_time()
    gate.flush()  # the last block's commits (a request's cost, on the loop, like any other)
    reserve_s += time.thread_time() - start
    worker_s = time.process_time() - cpu - reserve_s - settle_s
    if budgets:  # every reservation released, every request committed at the event's price
        cost = costs.of_event(payload)[1]
        for account in gate.ledger.accounts():
            assert (account.reserved, account.in_flight, account.committed) == (0, 0, n * (cost or 0)), account
    return {"reserve_us": reserve_s / n * 1e6, "settle_us": settle_s / n * 1e6,
            "loop_us": (reserve_s + settle_s) / n * 1e6, "worker_us": worker_s / n * 1e6}


def measure(n: int = 100_000) -> dict[str, float]:
    """Medians of 5 runs, in us of CPU per request (``make bench`` may report these)."""
    runs = [gate_us(n, True) for _ in range(RUNS)]
    found = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    found["check_us"] = statistics.median(check_us(n) for _ in range(RUNS))
    found["no_budget_us"] = statistics.median(gate_us(n, False)["loop_us"] for _ in range(RUNS))
    return found


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    m = measure(n)
    print(f"budgets, four applying (key, team, project, user): on the event loop {m['loop_us']:.2f} us CPU per "
          f"request (target 5 us: reserve with worst-case pricing {m['reserve_us']:.2f}, settle hand-off "
          f"{m['settle_us']:.2f}); settle worker {m['worker_us']:.2f} us off the loop; the ledger's check alone "
          f"{m['check_us']:.2f} us; none applying {m['no_budget_us']:.2f} us ({n} requests, {IN_FLIGHT} in flight, "
          f"median of {RUNS})")


if __name__ == "__main__":
    main()
