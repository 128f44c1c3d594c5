"""Spend per soft-budget window and per team-hour, and which alerts have fired. Pure: no I/O, no clock.

The state starts from the ledger and then follows the usage topic; both feed :meth:`AlertState.add` with one
:class:`Spend` per event, so counting is de-duplicated by ``event_id`` in one place:

* events that started before ``since`` (the start of the ledger's per-event read, e.g. one hour before the
  process started) are in the ledger's totals (:meth:`AlertState.load_spent`, :meth:`AlertState.load_hour`)
  and are never counted again from Kafka: that cut is by event time, so it holds whatever the memory bound;
* events of the recount window, from ``since`` to the process's start, may be shown by both the ledger rows and
  the topic's replay: their ids are kept (``recount``, as many as the window holds) until a second copy arrives,
  then pass to the bounded memory below; so the ledger and Kafka never both count one of them;
* any other event is counted once per id among the last ``seen_ids`` distinct ids (``seen``, 500,000 by
  default: 91 bytes each measured, 45 MB; at 3M requests a day, 4 hours of traffic), least recently seen
  evicted first. A month of ids (~90M with 3M a day) would not fit in memory.

What can still be counted twice: a copy of an event that arrives after ``seen_ids`` other distinct events were
first seen since its previous copy, e.g. a redelivery hours later (a gateway that crashed replays its journal
when it comes back; the consumer re-reads from its start offsets after a rebalance). Its cost then counts twice:
a budget's spend is over, never under, so a threshold can fire early, never late; its hour's spend is over too,
so a spike can fire that would not have, and the 24 hours after it see a trailing mean higher by cost/24.

An alert goes *pending* when it is decided and *fired* once the webhook answered 2xx (:meth:`delivered`);
neither is decided again. The fired keys come back from the durable log at start (:meth:`load_fired`).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from aimeter.alerts.rules import HOUR, Alert, Rules, hour_of, last_complete_hour, spike, thresholds_crossed
from aimeter.budgets.model import Budget, ScopeKind, Window, budget_window

SEEN_IDS = 500_000  # ids remembered to drop redelivered events: the memory bound (see the module docstring)


@dataclass(frozen=True, slots=True)
class Spend:
    """One event as the alerts count it: its id, when it started, what the ledger charges, and who it is for."""

    event_id: UUID
    started_at: datetime
    cost_usd: Decimal | None  # None: unpriced or unmetered; counted nowhere, as in the ledger's sums
    team: str
    project: str = ""
    user: str = ""
    api_key_id: str = ""

    def scope_value(self, scope: ScopeKind) -> str:
        return {ScopeKind.KEY: self.api_key_id, ScopeKind.TEAM: self.team, ScopeKind.PROJECT: self.project,
                ScopeKind.USER: self.user}[scope]


class AlertState:
    """Soft budgets' spend in their current windows, each team's spend by hour, and the alerts' progress."""

    def __init__(self, budgets: Sequence[Budget], rules: Rules, *, since: datetime, now: datetime,
                 seen_ids: int = SEEN_IDS) -> None:
        if seen_ids < 1:
            raise ValueError(f"seen_ids must be at least 1 (ids remembered to drop redeliveries), got {seen_ids}")
        self.budgets = [b for b in budgets if not b.hard]  # hard budgets refuse at the gateway; soft ones notify
        self.rules = rules
        self.since = since
        self.windows: dict[str, Window] = {b.name: budget_window(b, now) for b in self.budgets}
        self.spent: dict[str, Decimal] = {b.name: Decimal(0) for b in self.budgets}
        self.hourly: defaultdict[str, dict[datetime, Decimal]] = defaultdict(dict)
        self.started = now
        self.seen_ids = seen_ids
        # Ids as 128-bit ints (44 bytes, a UUID object is ~100): the recount window's, then the last seen_ids others.
        self.recount: set[int] = set()
        self.seen: OrderedDict[int, None] = OrderedDict()
        self.fired: set[str] = set()
        self.pending: set[str] = set()
        self.horizon = since

    # -- start: the ledger's totals before ``since``, and the durable fired log
    def load_spent(self, budget: str, amount: Decimal) -> None:
        self.spent[budget] += amount

    def load_hour(self, team: str, hour: datetime, amount: Decimal) -> None:
        hours = self.hourly[team]
        hours[hour] = hours.get(hour, Decimal(0)) + amount

    def load_fired(self, keys: Iterable[str]) -> None:
        self.fired.update(keys)

    # -- the stream
    def add(self, spend: Spend) -> list[Alert]:
        """Count one event (once, whoever shows it); the threshold alerts it newly decides."""
        if spend.started_at < self.horizon or not self._first_copy(spend):
            return []
        if not spend.cost_usd:
            return []
        self.load_hour(spend.team, hour_of(spend.started_at), spend.cost_usd)
        decided: list[Alert] = []
        for budget in self.budgets:
            if spend.scope_value(budget.scope) != budget.scope_value:
                continue
            window = self.windows[budget.name]
            if spend.started_at >= window.reset:  # the first event of the next period arrived before our tick
                window = self._roll(budget, spend.started_at)
            if spend.started_at in window:
                self.spent[budget.name] += spend.cost_usd
                decided += self._decide(thresholds_crossed(budget, window, self.spent[budget.name], self.rules))
        return decided

    def tick(self, now: datetime) -> list[Alert]:
        """Periodic: start new periods at their reset, decide the spike rule for the last complete hour, and
        forget what no window or spike can need any more."""
        for budget in self.budgets:
            if now >= self.windows[budget.name].reset:
                self._roll(budget, now)
        hour = last_complete_hour(now, self.rules)
        decided = self._decide([a for team, hours in self.hourly.items()
                                if (a := spike(team, hour, hours, self.rules)) is not None])
        self._prune(min([hour - HOUR * self.rules.spike_trailing_hours,
                         *(w.start for w in self.windows.values())]))
        return decided

    def delivered(self, key: str) -> None:
        """The webhook answered 2xx (and the durable log has it): never decide this alert again."""
        self.pending.discard(key)
        self.fired.add(key)

    def _roll(self, budget: Budget, at: datetime) -> Window:
        window = budget_window(budget, at)
        if window.start > self.windows[budget.name].start:
            self.windows[budget.name] = window
            self.spent[budget.name] = Decimal(0)
        return self.windows[budget.name]

    def _first_copy(self, spend: Spend) -> bool:
        """Remember the id; False when it was remembered already (a copy: count nothing)."""
        key = spend.event_id.int
        if key in self.recount:  # the ledger's row and the topic's copy: both seen now, the window is done with it
            self.recount.discard(key)
            self._remember(key)
            return False
        if key in self.seen:
            self.seen.move_to_end(key)
            return False
        if spend.started_at < self.started:  # the recount window: the other side may show it after any number
            self.recount.add(key)
        else:
            self._remember(key)
        return True

    def _remember(self, key: int) -> None:
        self.seen[key] = None
        if len(self.seen) > self.seen_ids:
            self.seen.popitem(last=False)

    def _decide(self, alerts: list[Alert]) -> list[Alert]:
        new = [a for a in alerts if a.key not in self.fired and a.key not in self.pending]
        self.pending.update(a.key for a in new)
        return new

    def _prune(self, horizon: datetime) -> None:
        """Events before ``horizon`` change nothing any more: drop their hours (and the recount window's ids once
        it is all before), and ignore them later. ``seen`` is bounded by count and keeps its order."""
        if horizon <= self.horizon:
            return
        self.horizon = horizon
        if horizon >= self.started:  # every id of the recount window belongs to an event that is ignored now
            self.recount.clear()
        for team in list(self.hourly):
            hours = {h: v for h, v in self.hourly[team].items() if h >= hour_of(horizon)}
            if hours:
                self.hourly[team] = hours
            else:
                del self.hourly[team]
