"""What a budget is, and the period it counts over. Pure: every function takes ``now``; nothing reads a clock.

A budget caps the USD spent by one *scope* (a gateway key, a team, a project or a user) over a calendar
*period* (a day, an ISO week starting Monday, or a calendar month) in the budget's own IANA timezone.
``hard`` budgets refuse requests that cannot fit; ``soft`` ones only notify (the alerts consumer reads them).
``on_kafka_down`` says what a hard budget does when the gateway cannot see the usage topic (its view of other
replicas' spend is stale): ``fail_open`` keeps serving, ``fail_closed`` refuses until the topic is back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ScopeKind(StrEnum):
    """Which attribution field a budget is keyed on: the gateway key id, or the team, project or user label."""

    KEY = "key"
    TEAM = "team"
    PROJECT = "project"
    USER = "user"


class Period(StrEnum):
    """The calendar window a budget's spend is counted over; it resets at the window's end."""

    DAY = "day"
    WEEK = "week"  # ISO week: Monday 00:00 to the next Monday 00:00, in the budget's timezone
    MONTH = "month"


class Enforcement(StrEnum):
    """``hard``: refuse with 429 when a request cannot fit. ``soft``: never refuse; alerts notify."""

    HARD = "hard"
    SOFT = "soft"


class KafkaDown(StrEnum):
    """What a hard budget does while the usage topic is unreachable (other replicas' spend unseen)."""

    FAIL_OPEN = "fail_open"
    FAIL_CLOSED = "fail_closed"


class BudgetError(ValueError):
    """A budget definition that cannot be enforced; the message names the budget and the bad field."""


@dataclass(frozen=True, slots=True)
class Budget:
    """One USD cap on one scope over a calendar period.

    ``name`` is how refusals, alerts and the CLI call it; ``scope_value`` is the key id, team, project or
    user it applies to. ``amount_usd`` is a Decimal (money is never a float).
    """

    name: str
    scope: ScopeKind
    scope_value: str
    amount_usd: Decimal
    period: Period = Period.MONTH
    timezone: str = "UTC"
    enforcement: Enforcement = Enforcement.HARD
    on_kafka_down: KafkaDown = KafkaDown.FAIL_OPEN

    def __post_init__(self) -> None:
        if not self.name:
            raise BudgetError("a budget needs a name")
        if not self.scope_value:
            raise BudgetError(f"budget {self.name!r}: scope {self.scope.value!r} needs a value (which "
                              f"{self.scope.value} it caps)")
        if not isinstance(self.amount_usd, Decimal) or not self.amount_usd.is_finite() or self.amount_usd < 0:
            raise BudgetError(f"budget {self.name!r}: amount_usd must be a non-negative Decimal, got "
                              f"{self.amount_usd!r}")
        zone(self.timezone, self.name)

    @property
    def hard(self) -> bool:
        return self.enforcement is Enforcement.HARD


def zone(name: str, budget: str = "") -> ZoneInfo:
    """The IANA timezone ``name``; a BudgetError naming the budget when the zone is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BudgetError(f"budget {budget!r}: unknown IANA timezone {name!r} (e.g. 'Europe/Paris', 'UTC')") from exc


@dataclass(frozen=True, slots=True)
class Window:
    """One period of one budget: spend counts from ``start`` (inclusive) until ``reset`` (exclusive), both UTC."""

    start: datetime
    reset: datetime

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at < self.reset


def window(period: Period, timezone: str, now: datetime) -> Window:
    """The period containing ``now`` (an aware datetime), with boundaries at local midnight in ``timezone``.

    Boundaries are computed on the local calendar and converted back, so a day across a DST change lasts
    23 or 25 hours, as the people who set the budget would expect.
    """
    if now.tzinfo is None:
        raise BudgetError(f"window() needs an aware datetime, got naive {now!r}")
    tz = zone(timezone)
    local = now.astimezone(tz)
    day = local.date()
    if period is Period.DAY:
        first, after = day, day + timedelta(days=1)
    elif period is Period.WEEK:
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
    else:
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    start = datetime(first.year, first.month, first.day, tzinfo=tz).astimezone(UTC)
    reset = datetime(after.year, after.month, after.day, tzinfo=tz).astimezone(UTC)
    return Window(start, reset)


def budget_window(budget: Budget, now: datetime) -> Window:
    """:func:`window` for one budget's period and timezone."""
    return window(budget.period, budget.timezone, now)
