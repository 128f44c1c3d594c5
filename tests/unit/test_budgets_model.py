"""Budget periods: local-midnight boundaries in the budget's timezone, DST-length days, ISO weeks, months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aimeter.budgets.model import Budget, BudgetError, Period, ScopeKind, budget_window, window


def test_month_in_paris_starts_at_local_midnight_of_the_first() -> None:
    w = window(Period.MONTH, "Europe/Paris", datetime(2026, 12, 31, 23, 30, tzinfo=UTC))  # Jan 1st 00:30 in Paris
    assert w.start == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert w.reset == datetime(2027, 1, 31, 23, 0, tzinfo=UTC)


def test_week_is_monday_to_monday_local() -> None:
    w = window(Period.WEEK, "America/New_York", datetime(2026, 12, 6, 3, 0, tzinfo=UTC))  # Saturday evening there
    assert w.start == datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    assert w.reset - w.start == timedelta(days=7)
    assert w.start.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York")).weekday() == 0


def test_dst_day_lasts_23_hours() -> None:
    w = window(Period.DAY, "Europe/Paris", datetime(2026, 3, 29, 12, tzinfo=UTC))
    assert w.reset - w.start == timedelta(hours=23)
    assert datetime(2026, 3, 29, 12, tzinfo=UTC) in w
    assert w.reset not in w


def test_december_month_rolls_into_next_year_utc() -> None:
    w = window(Period.MONTH, "UTC", datetime(2026, 12, 6, tzinfo=UTC))
    assert (w.start, w.reset) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def test_budget_window_uses_its_own_zone() -> None:
    b = Budget("ml", ScopeKind.TEAM, "ml", Decimal(10), Period.DAY, "Asia/Tokyo")
    assert budget_window(b, datetime(2026, 12, 6, 16, tzinfo=UTC)).start == datetime(2026, 12, 6, 15, tzinfo=UTC)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
    ({"amount_usd": Decimal(-1)}, "amount_usd"),
    ({"scope_value": ""}, "needs a value"),
])
def test_bad_budget_names_the_field(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"name": "b", "scope": ScopeKind.KEY, "scope_value": "k1", "amount_usd": Decimal(1)}
    args.update(kwargs)
    with pytest.raises(BudgetError, match=fragment):
        Budget(**args)  # type: ignore[arg-type]


def test_naive_now_is_refused() -> None:
    with pytest.raises(BudgetError, match="aware"):
        window(Period.DAY, "UTC", datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
