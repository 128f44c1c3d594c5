"""The gateway's budget hook: reserve before forwarding, settle when the usage event is emitted.

Runs on the gateway's event loop, so the ledger is only ever touched from that one thread (the topic follower
leaves its events in an inbox the gate drains before each check). A Refusal raised here becomes a 429 in the
API's own error shape, with ``retry-after`` until the budget resets.

Budgets come from the config and from the gateway keys' records (``limits["budgets"]``). The key records are
read once a second; when their budgets change, a new ledger is built beside the current one (spend loaded and
the topic followed from a new cutoff) and replaces it once current: a change takes effect within seconds,
with no restart. Requests in flight at the swap are counted when their events arrive, like another replica's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aimeter.budgets.ledger import Ledger, Reservation, Scopes, to_usd
from aimeter.budgets.model import Budget
from aimeter.budgets.pricing import Costs, Route, Tags, worst_usage
from aimeter.budgets.spec import BudgetsConfig, key_budgets
from aimeter.budgets.sync import TopicFollower
from aimeter.config import Backend
from aimeter.events import Attribution

log = logging.getLogger(__name__)
_NO_TAGS = Tags({})
KEYS_EVERY_S = 1.0
# Builds a ledger for a set of budgets and starts its follower (None: nothing to follow, no budgets).
Rebuild = Callable[[list[Budget]], tuple[Ledger, TopicFollower | None]]
MAX_ROUTES = 10_000  # (backend, model, api, batch tag, minute) tariffs kept; cleared when full


class BudgetGate:
    """Reservations of this replica's requests in flight, by event id."""

    def __init__(self, ledger: Ledger, costs: Costs, config: BudgetsConfig, follower: TopicFollower | None = None,
                 *, keys: Any = None, fixed: list[Budget] | None = None, rebuild: Rebuild | None = None) -> None:
        self.ledger, self.costs, self.config, self.follower = ledger, costs, config, follower
        # Key-store budgets: ``keys.records`` (a gateway KeyStore), the config's budgets, and how to rebuild.
        self.keys, self.fixed, self.rebuild = keys, fixed or [], rebuild
        self.key_budgets: dict[str, Budget] = {}
        self._next_keys = 0.0
        self._next: tuple[Ledger, TopicFollower | None] | None = None
        self._problems: set[str] = set()
        self.max_delay_s = 0.0  # the largest "ended on a replica -> counted here" so far
        self.pending: dict[str, tuple[Reservation, float]] = {}
        self._minute = (-1, "")
        self._tariffs: dict[tuple[Any, ...], tuple[Route, Any]] = {}
        self.largest = 0  # the largest reservation so far (units): c_max in the overshoot bound

    def _started_text(self, at: float) -> str:
        minute = int(at // 60)
        if self._minute[0] != minute:
            self._minute = (minute, datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:00.000000Z"))
        return self._minute[1]

    def reserve(self, event_id: str, attribution: Attribution, *, backend_name: str, backend: Backend, model: str,
                api: str, body: dict[str, Any], body_bytes: int, now: float) -> None:
        """Reserve the request's worst case in every budget that applies; raises ``Refusal`` when one is full."""
        self.refresh(now)
        if not self.ledger.by_scope:  # no budget at all (a key store may add one later)
            return
        scopes = Scopes(attribution.api_key_id, attribution.team, attribution.project, attribution.user)
        accounts = self.ledger.applicable(scopes)
        if not accounts:
            return
        limit = self.config.output_limits.get(model, self.config.output_limit)
        usage = worst_usage(body, body_bytes, limit, embeddings="embed" in api)
        # The tariff of this route and minute, kept here: the pricer's memo needs a Route and its key first.
        batch = attribution.tags.get("batch") if attribution.tags else None
        key = (backend_name, model, api, batch, int(now // 60))
        found = self._tariffs.get(key)
        if found is None:
            tags = Tags(attribution.tags) if attribution.tags else _NO_TAGS
            route = Route(backend.deployment.value, backend_name, backend.provider, model, "", api, tags,
                          self._started_text(now))
            if len(self._tariffs) > MAX_ROUTES:
                self._tariffs.clear()
            found = self._tariffs[key] = (route, self.costs.tariff(route))
        worst = self.costs.worst_case(found[0], usage, found[1]) or 0  # unpriced model: nothing to reserve
        reservation = self.ledger.reserve_in(accounts, worst, now)
        self.largest = max(self.largest, worst)
        self.pending[event_id] = (reservation, now)

    def settle(self, event_id: str, payload: bytes) -> None:
        """The event is emitted: commit its real cost, priced as the pricer prices it."""
        held = self.pending.pop(event_id, None)
        if held is None:
            return
        reservation, started = held
        try:
            _, cost = self.costs.of_event(payload)
        except Exception:  # noqa: BLE001 - an event we cannot price here still counts: its worst case
            cost = None
        self.ledger.settle(reservation, cost, event_id, started)

    def release(self, event_id: str) -> None:
        """The event could not be built: commit the reservation (its worst case), never leak it."""
        held = self.pending.pop(event_id, None)
        if held is not None:
            self.ledger.settle(held[0], None, event_id, held[1])

    def drain(self, follower: TopicFollower) -> None:
        """Apply what the topic follower has priced since the last check (on the loop: one writer)."""
        self.ledger.kafka_ok = follower.ok
        inbox = follower.inbox
        if not inbox:
            return
        while inbox:
            kind, items = inbox.popleft()
            if kind == "load":
                for name, start, committed in items:
                    self.ledger.load(name, start, committed)
                continue
            # Arrival in the inbox, not this drain, ends an event's propagation: no check runs in between.
            arrived, events = items
            for event_id, scopes, cost, started, ended in events:
                if self.ledger.apply(event_id, scopes, cost, started):
                    self.max_delay_s = max(self.max_delay_s, arrived - ended)

    def status(self, now: float) -> dict[str, Any]:
        """This replica's view of every budget (``GET /budgets``, ``aimeter budgets show``): amounts in USD text.

        ``max_delay_s`` (the bound's d) and ``largest_reservation_usd`` (its c_max) are what this replica saw."""
        self.refresh(now)
        budgets = []
        for account in self.ledger.accounts():
            if now >= account.reset or now < account.start:
                account.roll(now)
            b = account.budget
            budgets.append({
                "name": b.name, "scope": b.scope.value, "value": b.scope_value, "amount_usd": str(b.amount_usd),
                "period": b.period.value, "timezone": b.timezone, "enforcement": b.enforcement.value,
                "on_kafka_down": b.on_kafka_down.value,
                "period_start": datetime.fromtimestamp(account.start, UTC).isoformat(),
                "resets_at": datetime.fromtimestamp(account.reset, UTC).isoformat(),
                "spent_usd": str(to_usd(account.committed)), "reserved_usd": str(to_usd(account.reserved)),
                "remaining_usd": str(to_usd(account.remaining)), "in_flight": account.in_flight})
        return {"budgets": budgets, "ledger_current": self.ledger.kafka_ok, "max_delay_s": self.max_delay_s,
                "largest_reservation_usd": str(to_usd(self.largest))}

    def refresh(self, now: float) -> None:
        """Before a check: the keys' budgets (once a second), a rebuilt ledger once current, the topic's news."""
        if now >= self._next_keys and self.keys is not None:
            self.sync_keys(now)
        if self._next is not None:
            self._swap_when_current()
        if self.follower is not None:
            self.drain(self.follower)

    def sync_keys(self, now: float) -> None:
        """Once a second: when the keys' budgets changed, start building the ledger for the new set."""
        self._next_keys = now + KEYS_EVERY_S
        wanted, problems = key_budgets(self.keys.records)
        for problem in set(problems) - self._problems:
            log.warning("budgets: %s", problem)
        self._problems = set(problems)
        if wanted == self.key_budgets or self.rebuild is None:
            return
        self.key_budgets = wanted
        if self._next is not None and self._next[1] is not None:
            _stop_later(self._next[1])
        self._next = self.rebuild([*self.fixed, *wanted.values()])
        log.info("budgets: key budgets changed (%d now); a new ledger replaces this one once current", len(wanted))

    def _swap_when_current(self) -> None:
        assert self._next is not None
        ledger, follower = self._next
        if follower is not None and not follower.current.is_set():
            return
        old, self._next = self.follower, None
        self.ledger, self.follower = ledger, follower
        if old is not None:
            _stop_later(old)


def _stop_later(follower: TopicFollower) -> None:
    """Stop a follower off the event loop (closing its consumer can take a moment)."""
    threading.Thread(target=follower.stop, name="budgets-follower-stop", daemon=True).start()
