"""Gateway CPU per request spent on budgets, on the gateway's own code (no HTTP, no Kafka).

Three numbers, per request of the benchmark's own chat body (``phases.body``) to gpt-4o, with four budgets
applying to it (its key, team, project and user) and set high so every request is admitted:

* **check**: the ledger's decision alone (``Ledger.reserve`` + ``Ledger.settle`` with known amounts): which
  budgets apply, the compare, the bookkeeping. The issue's target is 5 us.
* **reserve**: ``BudgetGate.reserve`` as the request path calls it: the check plus pricing the worst case with
  the pricer's memoized tariff.
* **settle**: ``BudgetGate.settle`` on the encoded event: decoding it and pricing it as the pricer does.

And what every request pays when no budget applies to it. ``measure(n)`` returns the numbers for ``make bench``.

    .venv/bin/python -m benchmarks.budget_check [N]
"""

from __future__ import annotations

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


def check_us(n: int) -> float:
    ledger, scopes, now = _ledger(), Scopes("k", "bench", "p", "u"), time.time()
    start = time.process_time()
    for i in range(n):
        held = ledger.reserve(scopes, 5_000_000_000, now)
        assert held is not None
        ledger.settle(held, 1_000_000_000, str(i), now)
    return (time.process_time() - start) / n * 1e6


def gate_us(n: int, budgets: bool) -> tuple[float, float]:
    gate = BudgetGate(_ledger() if budgets else Ledger(), Costs(PriceBook(CONFIG)), BudgetsConfig())
    backend = CONFIG.backends["openai"]
    raw = phases.body(0)
    body, now = orjson.loads(raw), time.time()
    who = WHO if budgets else Attribution(team="other")
    payload = _event("0193a6f0-0000-7000-8000-000000000001", datetime.fromtimestamp(now, UTC))
    ids = [str(i) for i in range(n)]
    start = time.process_time()
    for event_id in ids:
        gate.reserve(event_id, who, backend_name="openai", backend=backend, model="gpt-4o", api="openai.chat",
                     body=body, body_bytes=len(raw), now=now)
    reserved = time.process_time()
    for event_id in ids:
        gate.settle(event_id, payload)
    settled = time.process_time()
    return (reserved - start) / n * 1e6, (settled - reserved) / n * 1e6


def measure(n: int = 100_000) -> dict[str, float]:
    """Best of 3, in us of CPU per request (``make bench`` may report these)."""
    check = min(check_us(n) for _ in range(3))
    runs = [gate_us(n, True) for _ in range(3)]
    off = min(gate_us(n, False)[0] for _ in range(3))
    return {"check_us": check, "reserve_us": min(r[0] for r in runs), "settle_us": min(r[1] for r in runs),
            "no_budget_us": off}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    m = measure(n)
    print(f"budgets, four applying (key, team, project, user): check {m['check_us']:.2f} us CPU per request "
          f"(target 5 us); reserve with worst-case pricing {m['reserve_us']:.2f} us; settle with the event's pricing "
          f"{m['settle_us']:.2f} us; none applying {m['no_budget_us']:.2f} us ({n} requests, best of 3)")


if __name__ == "__main__":
    main()
