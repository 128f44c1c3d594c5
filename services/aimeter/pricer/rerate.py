"""Re-rating, the pure half: given stored events and the priced rows in force, what changes. No I/O.

Usage is immutable; a re-rating only ever *adds* a priced row with a higher ``rating_version``,
and only for events whose price actually changed (amounts, components or status), so running
the same re-rating twice writes nothing the second time. Totals are kept per team so the
command can show finance what moved, and where.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from aimeter.events import UsageEvent
from aimeter.pricer.pricebook import NOT_PRICED, PriceBook, Priced
from aimeter.pricer.rates import CLASSES
from aimeter.pricer.rows import priced_row

# What "the price changed" means: any amount, component or the status. The price_source text alone
# (an overrides entry that moved to another line) is not a change worth a new version.
COMPARED = ["cost_usd", *(f"{c}_cost_usd" for c in CLASSES), "reference_cost_usd", "pricing_status"]


@dataclass
class Totals:
    """Cost before and after over a set of events (unpriced and unmetered events add nothing, and are counted)."""

    events: int = 0
    changed: int = 0
    before: Decimal = Decimal(0)
    after: Decimal = Decimal(0)
    unpriced_before: int = 0
    unpriced_after: int = 0

    def add(self, old: Mapping[str, Any] | None, new: Priced, changed: bool) -> None:
        self.events += 1
        self.changed += changed
        old_cost = old.get("cost_usd") if old is not None else None
        self.before += old_cost or 0
        self.after += new.cost_usd or 0
        self.unpriced_before += old is None or old.get("pricing_status") in NOT_PRICED
        self.unpriced_after += new.pricing_status in NOT_PRICED

    def merge(self, other: Totals) -> None:
        for name in ("events", "changed", "before", "after", "unpriced_before", "unpriced_after"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def difference(self) -> Decimal:
        return self.after - self.before


@dataclass
class Plan:
    """Rows to insert for one page, and the page's totals (overall and per team)."""

    rows: list[list[Any]] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    by_team: dict[str, Totals] = field(default_factory=dict)

    def merge(self, other: Plan) -> None:
        self.totals.merge(other.totals)
        for team, totals in other.by_team.items():
            self.by_team.setdefault(team, Totals()).merge(totals)


def new_values(priced: Priced) -> tuple[Any, ...]:
    components = priced.components.as_row() if priced.components is not None else [None] * len(CLASSES)
    return (priced.cost_usd, *components, priced.reference_cost_usd, priced.pricing_status)


def differs(old: Mapping[str, Any] | None, priced: Priced) -> bool:
    """Decimals compare by value, so 0.00042 read back as 0.000420000000 is no change."""
    return old is None or tuple(old.get(c) for c in COMPARED) != new_values(priced)


def plan_page(events: Sequence[UsageEvent], current: Mapping[UUID, Mapping[str, Any]], book: PriceBook,
              rating_version: int, priced_at: datetime) -> Plan:
    """Price each event under ``book``; keep a new versioned row only where the price changed."""
    plan = Plan()
    for event in events:
        old = current.get(event.event_id)
        priced = book.price(event)
        changed = differs(old, priced)
        if changed:
            plan.rows.append(priced_row(event, priced, rating_version, priced_at))
        plan.totals.add(old, priced, changed)
        plan.by_team.setdefault(event.attribution.team, Totals()).add(old, priced, changed)
    return plan
