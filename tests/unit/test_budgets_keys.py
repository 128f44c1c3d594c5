"""Key-store budgets: read from active keys' ``limits["budgets"]``, bad entries skipped with a reason, and a
change swaps in a ledger built for the new set (here without a topic follower, so it is current at once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aimeter.budgets.gate import BudgetGate
from aimeter.budgets.ledger import Ledger, Refusal
from aimeter.budgets.model import Budget, ScopeKind
from aimeter.budgets.pricing import Costs
from aimeter.budgets.spec import BudgetsConfig, KeyBudgetSpec, key_budgets
from aimeter.budgets.sync import TopicFollower
from aimeter.config import parse_config
from aimeter.events import Attribution
from aimeter.gateway.keys import KeyRecord, new_key
from aimeter.pricer.pricebook import PriceBook

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "http://127.0.0.1:1/v1", deployment: proprietary, provider: openai}
models:
  gpt-4o: {backend: openai}
""")
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp()


def record(limits: dict[str, object], revoked: bool = False) -> KeyRecord:
    _, made = new_key("ml", "", "", datetime(2026, 12, 1, tzinfo=UTC))
    return KeyRecord(made.key_id, made.salt, made.digest, "ml", limits=limits,
                     revoked_at="2026-12-02T00:00:00+00:00" if revoked else "")


def test_key_budgets_from_active_records_only() -> None:
    good = record({"budgets": [KeyBudgetSpec(name="k-cap", usd=Decimal("2")).entry()]})
    bad = record({"budgets": [{"name": "oops", "usd": "-1"}]})
    revoked = record({"budgets": [KeyBudgetSpec(name="gone", usd=Decimal("1")).entry()]}, revoked=True)
    found, problems = key_budgets({r.key_id: r for r in (good, bad, revoked)})
    assert list(found) == ["k-cap"]
    assert (found["k-cap"].scope, found["k-cap"].scope_value) == (ScopeKind.KEY, good.key_id)
    assert len(problems) == 1
    assert "oops" in problems[0]


@dataclass
class Store:
    records: dict[str, KeyRecord] = field(default_factory=dict)


def test_a_new_key_budget_takes_effect_without_restart() -> None:
    store = Store()
    built: list[list[Budget]] = []

    def rebuild(budgets: list[Budget]) -> tuple[Ledger, TopicFollower | None]:
        built.append(budgets)
        return Ledger(budgets), None

    gate = BudgetGate(Ledger(), Costs(PriceBook(CONFIG)), BudgetsConfig(), keys=store, rebuild=rebuild)
    key = record({"budgets": [KeyBudgetSpec(name="tiny", usd=Decimal("0.0001")).entry()]})
    who = Attribution(team="ml", api_key_id=key.key_id)

    def reserve(event_id: str, now: float) -> None:
        gate.reserve(event_id, who, backend_name="openai", backend=CONFIG.backends["openai"], model="gpt-4o",
                     api="openai.chat", body={"max_tokens": 1000}, body_bytes=100, now=now)

    reserve("e1", NOW)  # no budget yet
    store.records[key.key_id] = key
    reserve("e2", NOW + 0.5)  # within the second: not re-read yet
    with pytest.raises(Refusal, match="tiny"):
        reserve("e3", NOW + 1.0)
    assert [b.name for b in built[-1]] == ["tiny"]
    store.records = {}
    reserve("e4", NOW + 2.0)  # deleted: served again
