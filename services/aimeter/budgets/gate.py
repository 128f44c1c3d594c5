"""The gateway's budget hook: reserve before forwarding, settle when the usage event is emitted.

Runs on the gateway's event loop, so the ledger is only ever touched from that one thread (the topic follower
leaves its events in an inbox the gate drains before each check, and so does the settle worker, which decodes and
prices emitted events off the loop). A Refusal raised here becomes a 429 in the API's own error shape, with
``retry-after`` until the budget resets.

Per request the loop does plain lookups and integer arithmetic (~4 us CPU with four budgets, measured in
benchmarks/budget_check.py): the attribution's accounts are remembered by the ledger, and the worst-case rates per
(backend, model, api, batch tag) for the current minute, made from the pricer's tariff (made again when the price
book or the budgets settings are replaced, or the backend object changes).

Budgets come from the config and from the gateway keys' records (``limits["budgets"]``). The key records are
read once a second; when their budgets change, a new ledger is built beside the current one (spend loaded and
the topic followed from a new cutoff) and replaces it once current: a change takes effect within seconds,
with no restart. Requests in flight at the swap are counted when their events arrive, like another replica's
(they settle in the ledger they reserved in, so the new one does not take their ids as already counted).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aimeter.budgets.ledger import Ledger, Reservation, commit_priced, to_usd
from aimeter.budgets.model import Budget
from aimeter.budgets.pricing import Costs, Route, Tags, WorstRates, WorstUsage, output_cap, worst_rates
from aimeter.budgets.spec import BudgetsConfig, key_budgets
from aimeter.budgets.sync import TopicFollower
from aimeter.config import Backend
from aimeter.events import Attribution
from aimeter.pricer.tariff import Defer

log = logging.getLogger(__name__)
_NO_TAGS = Tags({})
KEYS_EVERY_S = 1.0
# Builds a ledger for a set of budgets and starts its follower (None: nothing to follow, no budgets).
Rebuild = Callable[[list[Budget]], tuple[Ledger, TopicFollower | None]]
MAX_ROUTES = 10_000  # (backend, model, api, batch tag) tariffs and rates kept; cleared when full


class BudgetGate:
    """Reservations of this replica's requests in flight, by event id."""

    def __init__(self, ledger: Ledger, costs: Costs, config: BudgetsConfig, follower: TopicFollower | None = None,
                 *, keys: Any = None, fixed: list[Budget] | None = None, rebuild: Rebuild | None = None) -> None:
        self.ledger, self.follower = ledger, follower
        self._routes: dict[tuple[Any, ...], _Priced] = {}
        self.settler = Settler(costs)
        self.costs, self.config = costs, config
        # Key-store budgets: ``keys.records`` (a gateway KeyStore), the config's budgets, and how to rebuild.
        self.keys, self.fixed, self.rebuild = keys, fixed or [], rebuild
        self.key_budgets: dict[str, Budget] = {}
        self._next_keys = 0.0
        self._next: tuple[Ledger, TopicFollower | None] | None = None
        self._problems: set[str] = set()
        self.max_delay_s = 0.0  # the largest "ended on a replica -> counted here" so far
        self.pending: dict[str, Reservation] = {}  # by event id (a reservation knows its ledger and time)
        self._minute = (-1, "")
        self.largest = 0  # the largest reservation so far (units): c_max in the overshoot bound

    @property
    def costs(self) -> Costs:
        return self._costs

    @costs.setter
    def costs(self, costs: Costs) -> None:
        """A new price book: every route's worst-case rates are made again from it."""
        self._costs = self.settler.costs = costs
        self._routes.clear()

    @property
    def config(self) -> BudgetsConfig:
        return self._config

    @config.setter
    def config(self, config: BudgetsConfig) -> None:
        """New budgets settings (output limits): every route's worst case is made again."""
        self._config = config
        self._routes.clear()

    def _started_text(self, at: float) -> str:
        minute = int(at // 60)
        if self._minute[0] != minute:
            self._minute = (minute, datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:00.000000Z"))
        return self._minute[1]

    def reserve(self, event_id: str, attribution: Attribution, *, backend_name: str, backend: Backend, model: str,
                api: str, body: dict[str, Any], body_bytes: int, now: float) -> None:
        """Reserve the request's worst case in every budget that applies; raises ``Refusal`` when one is full."""
        self.refresh(now)
        ledger = self.ledger
        if not ledger.by_scope:  # no budget at all (a key store may add one later)
            return
        a = attribution
        accounts = ledger.applicable((a.api_key_id, a.team, a.project, a.user))
        if not accounts:
            return
        tags = a.tags
        key = (backend_name, model, api, tags.get("batch") if tags else None)
        priced = self._routes.get(key)
        if priced is None or priced[0] != now // 60 or priced[1] is not backend:
            priced = self._route(key, backend, attribution, now)
        _, _, rates, limit, embeddings, route, tariff = priced
        prompt = -(-body_bytes // 4)  # worst_usage(): the whole body at ~4 bytes a token, rounded up
        output = 0 if embeddings else output_cap(body, limit)
        try:
            if rates is None:
                raise Defer("no worst-case rates for this tariff")
            worst = rates.price(prompt, output) or 0  # unpriced model: nothing to reserve
        except Defer:
            worst = self._costs.worst_case(route, WorstUsage(prompt, output), tariff) or 0
        self.pending[event_id] = ledger.reserve_in(accounts, worst, now)
        if worst > self.largest:  # noqa: PLR1730 - max() is a call, this runs per request
            self.largest = worst

    def _route(self, key: tuple[Any, ...], backend: Backend, attribution: Attribution, now: float) -> _Priced:
        """The pricer's tariff for this route and minute and its worst-case rates, kept until the minute ends."""
        backend_name, model, api, _ = key
        tags = Tags(attribution.tags) if attribution.tags else _NO_TAGS
        route = Route(backend.deployment.value, backend_name, backend.provider, model, "", api, tags,
                      self._started_text(now))
        tariff = self._costs.tariff(route)
        limit = self._config.output_limits.get(model, self._config.output_limit)
        if len(self._routes) > MAX_ROUTES:
            self._routes.clear()
        priced = self._routes[key] = _Priced(now // 60, backend, None if tariff is None else worst_rates(tariff),
                                             limit, "embed" in api, route, tariff)
        return priced

    def settle(self, event_id: str, payload: bytes) -> None:
        """The event is emitted: its real cost, priced as the pricer prices it, replaces the reservation.

        The pricing runs on the settle worker, off the event loop; the cost is committed on the loop before the
        next check (:meth:`refresh`). Until then the reservation stays held, which only errs safe: the replica's
        own spend is never counted below what it is, and the event reaches the other replicas as before."""
        held = self.pending.pop(event_id, None)
        if held is None:
            return
        held.ledger.expect(event_id)  # type: ignore[union-attr] # its copy on the topic is not counted meanwhile
        held.event_id, held.payload = event_id, payload
        settler = self.settler
        settler.todo.put(held)  # hand it to the worker (the thread starts on demand)
        settler.submitted += 1
        if not settler.running:
            settler.start()

    def release(self, event_id: str) -> None:
        """The event could not be built: commit the reservation (its worst case), never leak it."""
        held = self.pending.pop(event_id, None)
        if held is not None and held.ledger is not None:
            held.ledger.settle(held, None, event_id, held.started)

    def flush(self, timeout_s: float = 1.0) -> None:
        """Commit every settle handed off so far (``status`` and tests: what was emitted is settled)."""
        self.settler.wait(timeout_s)
        self._commit()

    def _commit(self) -> None:
        """Apply the costs the settle worker priced (on the loop: the ledger has one writer)."""
        commit_priced(self.settler.done)

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
            arrived, events = items  # arrived None: read while catching up at start (counted, d not measured)
            for event_id, scopes, cost, started, ended in events:
                if self.ledger.apply(event_id, scopes, cost, started) and arrived is not None:
                    self.max_delay_s = max(self.max_delay_s, arrived - ended)

    def settled(self) -> bool:
        """Whether every settle handed to the worker has been priced (``GET /budgets`` awaits this off the loop)."""
        settler = self.settler
        return settler.priced + settler.inline >= settler.submitted

    def status(self, now: float, *, flush: bool = True) -> dict[str, Any]:
        """This replica's view of every budget (``GET /budgets``, ``aimeter budgets show``): amounts in USD text.

        ``flush`` False (the gateway's handler, which awaited :meth:`settled` itself) commits what the worker has
        priced and never blocks; a settle still in flight shows as reserved, which errs on the safe side.
        ``max_delay_s`` (the bound's d) and ``largest_reservation_usd`` (its c_max) are what this replica saw."""
        self.refresh(now)
        if flush:
            self.flush()
        else:
            self._commit()
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
        if self.settler.done:
            self._commit()

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


class _Priced(NamedTuple):
    """What the gate keeps per (backend, model, api, batch tag) for the minute it was made in."""

    minute: float
    backend: Backend
    rates: WorstRates | None
    limit: int  # the model's output limit (budgets.output_limits, else output_limit)
    embeddings: bool  # an embeddings API generates no output
    route: Route
    tariff: Any


class Settler:
    """Prices emitted events on a thread of its own, off the event loop: ``todo`` takes a reservation holding
    its encoded event, and it comes back in ``done`` with the event's cost, for the loop to commit. Decoding and
    pricing an event (~4 us, docs/decisions.md) was most of the budgets' CPU on the loop.

    The thread starts on the first hand-off and ends after ``IDLE_S`` without work (a later one starts another),
    so a gate never leaves a thread behind for long."""

    IDLE_S = 10.0
    GATHER_S = 0.002  # after the first event of a batch, how long the others may gather

    def __init__(self, costs: Costs) -> None:
        self.costs = costs
        self.todo: queue.SimpleQueue[Reservation] = queue.SimpleQueue()
        self.done: deque[Reservation] = deque()
        self.running = False
        self.submitted = 0  # written by the loop only
        self.priced = 0  # written by the worker only (two counters: no lost update between threads)
        self.inline = 0  # priced by ``wait`` on the loop

    def start(self) -> None:
        self.running = True
        threading.Thread(target=self._run, name="budgets-settle", daemon=True).start()

    def _price(self, item: Reservation) -> Reservation:
        try:
            item.cost = self.costs.of_event(item.payload)[1]
        except Exception:  # noqa: BLE001 - an event we cannot price here still counts: its worst case
            item.cost = None
        item.payload = b""
        return item

    def _run(self) -> None:
        todo, done = self.todo, self.done
        while True:
            try:
                item = todo.get(timeout=self.IDLE_S)
            except queue.Empty:
                self.running = False
                if todo.empty():  # else a hand-off raced the timeout and saw us running: carry on
                    return
                self.running = True
                continue
            # Let a batch gather: the thread then takes the GIL once per batch, not once per event (each switch
            # costs the loop CPU too; measured in benchmarks/budget_check.py).
            time.sleep(self.GATHER_S)
            while True:
                done.append(self._price(item))
                self.priced += 1
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    break

    def wait(self, timeout_s: float) -> None:
        """Until everything submitted is priced: what is still queued is priced here, then the worker's last
        item is waited for (bounded: past ``timeout_s`` the reservations stay held, which errs safe)."""
        while True:
            try:
                item = self.todo.get_nowait()
            except queue.Empty:
                break
            self.done.append(self._price(item))
            self.inline += 1
        deadline = time.monotonic() + timeout_s
        while self.priced + self.inline < self.submitted and time.monotonic() < deadline:
            time.sleep(0.0005)


def _stop_later(follower: TopicFollower) -> None:
    """Stop a follower off the event loop (closing its consumer can take a moment)."""
    threading.Thread(target=follower.stop, name="budgets-follower-stop", daemon=True).start()
