"""What fires an alert, and what the webhook receives. Pure: every function is given ``now`` and the spend.

* **Budget threshold**: a soft budget's spend in its current window reaches ``pct`` % of its amount (default
  50, 80 and 100). Each threshold fires once per window; its key names the budget, the window and the
  threshold, so a restart or a redelivered event finds it already fired.
* **Spend spike**, per team: the last complete UTC hour ``H`` (complete once ``grace`` has passed after its end,
  so late events of long requests are in) fires when ``spend(H) >= floor_usd`` and
  ``spend(H) > factor x mean(spend of the trailing_hours hours before H)``; hours without traffic count as $0.
  The floor keeps a team going from $0.02 to $0.10 an hour quiet. Once per team per hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aimeter.budgets.model import Budget, Window

HOUR = timedelta(hours=1)
THRESHOLD = "budget_threshold"
SPIKE = "spend_spike"
CENT = Decimal("0.01")
MICRO = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class Rules:
    """The alert rules' knobs (settings ``AIMETER_ALERTS_*``)."""

    thresholds_pct: tuple[int, ...] = (50, 80, 100)
    spike_factor: Decimal = Decimal(3)
    spike_floor_usd: Decimal = Decimal(10)
    spike_trailing_hours: int = 24
    spike_grace: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification. ``key`` is its identity: the same alert always gets the same key (the exactly-once id)."""

    key: str
    kind: str
    text: str
    fields: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """Slack-compatible JSON (``text`` is what Slack shows), plus the structured fields for other receivers."""
        return {"text": self.text, "alert_id": self.key, "kind": self.kind, **self.fields}


def hour_of(moment: datetime) -> datetime:
    """The UTC hour ``moment`` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def threshold_key(budget: Budget, window: Window, pct: int) -> str:
    return f"budget/{budget.name}/{window.start.isoformat()}/{pct}"


def usd(amount: Decimal) -> str:
    """Dollars to the cent; below a cent, to the micro-dollar (a $0.0005 budget must not read as $0.00)."""
    if amount == 0 or abs(amount) >= CENT:
        return f"${amount.quantize(CENT):,}"
    return f"${amount.quantize(MICRO).normalize():f}"


def thresholds_crossed(budget: Budget, window: Window, spent: Decimal, rules: Rules) -> list[Alert]:
    """Every threshold ``spent`` has reached in ``window``, lowest first (the caller drops those already fired).

    A $0 budget is crossed by any spend, never by none."""
    if spent <= 0:
        return []
    alerts = []
    for pct in sorted(rules.thresholds_pct):
        if spent * 100 < budget.amount_usd * pct:
            break
        share = "" if not budget.amount_usd else f" ({spent * 100 / budget.amount_usd:.1f}%)"
        text = (f"Budget {budget.name!r} ({budget.scope.value} {budget.scope_value}) reached {pct}%: "
                f"{usd(spent)} of {usd(budget.amount_usd)}{share} this {budget.period.value}, "
                f"which resets {window.reset.isoformat()}")
        alerts.append(Alert(threshold_key(budget, window, pct), THRESHOLD, text, {
            "budget": budget.name, "scope": budget.scope.value, "scope_value": budget.scope_value,
            "threshold_pct": str(pct), "spent_usd": str(spent), "budget_usd": str(budget.amount_usd),
            "period": budget.period.value, "period_start": window.start.isoformat(),
            "period_reset": window.reset.isoformat()}))
    return alerts


def last_complete_hour(now: datetime, rules: Rules) -> datetime:
    """The latest hour whose end is at least ``spike_grace`` before ``now``."""
    return hour_of(now - rules.spike_grace) - HOUR


def spike(team: str, hour: datetime, hourly: Mapping[datetime, Decimal], rules: Rules) -> Alert | None:
    """The spike alert for ``team``'s ``hour``, or None. ``hourly``: the team's spend by UTC hour."""
    spent = hourly.get(hour, Decimal(0))
    trailing = [hourly.get(hour - HOUR * i, Decimal(0)) for i in range(1, rules.spike_trailing_hours + 1)]
    mean = sum(trailing, Decimal(0)) / len(trailing)
    if spent < rules.spike_floor_usd or spent <= rules.spike_factor * mean:
        return None
    text = (f"Spend spike for team {team!r}: {usd(spent)} in the hour from {hour.isoformat()}, "
            f"{rules.spike_factor}x over the trailing {rules.spike_trailing_hours} h mean of {usd(mean)}/h")
    return Alert(f"spike/{team}/{hour.isoformat()}", SPIKE, text, {
        "team": team, "hour_start": hour.isoformat(), "spent_usd": str(spent), "trailing_mean_usd": str(mean),
        "factor": str(rules.spike_factor), "floor_usd": str(rules.spike_floor_usd)})
