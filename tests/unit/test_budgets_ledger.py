"""The ledger's decisions: reserve the worst case, refuse what cannot fit, settle to the real cost, count other
replicas' events once, roll over at the period's end, and fail open or closed when the topic is unreachable."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aimeter.budgets.ledger import Ledger, Refusal, Scopes, overshoot_bound, to_units, to_usd
from aimeter.budgets.model import Budget, Enforcement, KafkaDown, Period, ScopeKind

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC).timestamp()
ML = Scopes(key="k1", team="ml", project="p", user="u")


def team_budget(usd: str = "1", **kwargs: object) -> Budget:
    return Budget("ml-daily", ScopeKind.TEAM, "ml", Decimal(usd), Period.DAY, "UTC", **kwargs)  # type: ignore[arg-type]


def usd(text: str) -> int:
    return to_units(Decimal(text))


def test_reserve_until_full_then_refuse_naming_budget_and_reset() -> None:
    ledger = Ledger([team_budget("1")])
    held = [ledger.reserve(ML, usd("0.30"), NOW) for _ in range(3)]
    assert all(h is not None for h in held)
    with pytest.raises(Refusal) as refused:
        ledger.reserve(ML, usd("0.11"), NOW)
    message = str(refused.value)
    assert "ml-daily" in message
    assert "2026-12-07T00:00:00Z" in message
    assert "$0.900000 reserved" in message
    assert refused.value.retry_after == 12 * 3600 + 1
    assert ledger.reserve(ML, usd("0.10"), NOW) is not None  # exactly fits: 0.9 + 0.1 == 1


def test_settle_replaces_the_reservation_with_the_real_cost() -> None:
    ledger = Ledger([team_budget("1")])
    held = ledger.reserve(ML, usd("0.80"), NOW)
    assert held is not None
    ledger.settle(held, usd("0.05"), "e1", NOW)
    account = ledger.accounts()[0]
    assert (account.committed, account.reserved) == (usd("0.05"), 0)
    assert ledger.reserve(ML, usd("0.95"), NOW) is not None


def test_unpriced_or_unmetered_settles_at_the_worst_case() -> None:
    ledger = Ledger([team_budget("1")])
    held = ledger.reserve(ML, usd("0.40"), NOW)
    assert held is not None
    ledger.settle(held, None, "e1", NOW)
    assert ledger.accounts()[0].committed == usd("0.40")


def test_topic_events_count_once_and_own_events_are_not_counted_twice() -> None:
    ledger = Ledger([team_budget("1")])
    held = ledger.reserve(ML, usd("0.20"), NOW)
    assert held is not None
    ledger.settle(held, usd("0.10"), "own", NOW)
    assert not ledger.apply("own", ML, usd("0.10"), NOW)  # our own event, seen on the topic
    assert ledger.apply("other", ML, usd("0.30"), NOW)
    assert not ledger.apply("other", ML, usd("0.30"), NOW)  # redelivered
    assert ledger.accounts()[0].committed == usd("0.40")


def test_other_scopes_and_other_periods_do_not_count() -> None:
    ledger = Ledger([team_budget("1")])
    assert ledger.reserve(Scopes(team="search"), usd("5"), NOW) is None
    ledger.reserve(ML, usd("0.1"), NOW)
    ledger.apply("yesterday", ML, usd("0.5"), NOW - 86400)
    assert ledger.accounts()[0].committed == 0


def test_period_rolls_over_at_local_midnight() -> None:
    ledger = Ledger([team_budget("1")])
    held = ledger.reserve(ML, usd("0.9"), NOW)
    assert held is not None
    ledger.settle(held, usd("0.9"), "e1", NOW)
    with pytest.raises(Refusal):
        ledger.reserve(ML, usd("0.2"), NOW)
    tomorrow = datetime(2026, 12, 7, 0, 0, 1, tzinfo=UTC).timestamp()
    assert ledger.reserve(ML, usd("0.2"), tomorrow) is not None


def test_soft_budget_never_refuses() -> None:
    ledger = Ledger([team_budget("1", enforcement=Enforcement.SOFT)])
    for _ in range(5):
        assert ledger.reserve(ML, usd("0.5"), NOW) is not None
    assert ledger.accounts()[0].reserved == usd("2.5")


@pytest.mark.parametrize(("policy", "refused"), [(KafkaDown.FAIL_OPEN, False), (KafkaDown.FAIL_CLOSED, True)])
def test_kafka_down_fails_open_or_closed_per_budget(policy: KafkaDown, refused: bool) -> None:
    ledger = Ledger([team_budget("1", on_kafka_down=policy)])
    ledger.kafka_ok = False
    if refused:
        with pytest.raises(Refusal, match="unreachable"):
            ledger.reserve(ML, usd("0.01"), NOW)
    else:
        assert ledger.reserve(ML, usd("0.01"), NOW) is not None


def test_every_applicable_budget_must_fit() -> None:
    key = Budget("key-cap", ScopeKind.KEY, "k1", Decimal("0.5"), Period.MONTH)
    ledger = Ledger([team_budget("10"), key])
    with pytest.raises(Refusal, match="key-cap"):
        ledger.reserve(ML, usd("0.6"), NOW)
    assert all(a.reserved == 0 for a in ledger.accounts())  # nothing held by a refused request


def test_load_sets_period_to_date_spend() -> None:
    ledger = Ledger([team_budget("1")])
    start = datetime(2026, 12, 6, tzinfo=UTC).timestamp()
    ledger.load("ml-daily", start, usd("0.95"))
    with pytest.raises(Refusal):
        ledger.reserve(ML, usd("0.06"), NOW)


def test_bound_formula() -> None:
    assert overshoot_bound(3, 10, 5.0, 0.4, Decimal("0.02")) == Decimal("0.480")
    assert overshoot_bound(1, 10, 5.0, 0.4, Decimal("0.02")) == 0
    assert to_usd(usd("0.123456789012")) == Decimal("0.123456789012")
