"""The budget ledger one gateway replica keeps: committed spend, in-flight reservations, and the check. Pure.

Reserve, then settle: before a request is forwarded, its worst-case cost is reserved against every budget that
applies to it (key, team, project, user); the request is refused when, for some hard budget,

    committed + reserved + worst_case > amount

When its usage event is emitted, the reservation is released and the real cost committed. Spend from the
other replicas arrives from the usage topic (``apply``); an event this replica already settled is not counted
twice (its id is remembered). Amounts are integer units of 1e-12 USD (the ledger's 12 decimal places), so the
check is integer compares, no Decimal arithmetic on the request path.

The worst-case overshoot with R replicas, each with at most N requests in flight and admitting at most L
requests per second, a propagation delay d (emit on one replica to applied on every other) and the largest
reservation c_max (each request's real cost is at most its reservation):

    spend <= amount + (R - 1) * (N + L * d) * c_max

Why: take the last admission anywhere, at time t on replica r. Replica r's own spend is within the amount
minus what it saw of the others (its own reservations cover its in-flight requests). What r had not seen at t
are the other replicas' requests still in flight at t - d or admitted after it: per replica at most N + L * d
requests, each costing at most c_max. Nothing is admitted after t. Kafka down with ``fail_open``: no bound.

The gate prices an emitted event off the event loop and commits its cost before a later check; until then the
reservation stays held (and the event id is remembered, so its copy on the topic is not counted too). That changes
nothing above: r's own reservations still cover its unsettled requests, and the event goes to the topic when it
is emitted, so d and N are as before. It only makes r refuse a little earlier (a settled request holds its worst
case for the worker's delay, ~2 ms plus waiting for the GIL).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from aimeter.budgets.model import Budget, KafkaDown, ScopeKind, budget_window

UNITS_PER_USD = 10**12
SEEN_IDS = 200_000  # event ids remembered to drop duplicates (at-least-once topic; own events seen twice)
MEMO_SCOPES = 50_000  # attributions whose accounts are remembered (headers choose them: bounded, then cleared)
SCOPE_ORDER = (ScopeKind.KEY, ScopeKind.TEAM, ScopeKind.PROJECT, ScopeKind.USER)  # Scopes' fields, in order


def to_units(usd: Decimal) -> int:
    """USD as integer ledger units (1e-12 USD), rounded up: a cap is never read as larger than it is."""
    return -int(-(usd * UNITS_PER_USD) // 1)


def to_usd(units: int) -> Decimal:
    return Decimal(units).scaleb(-12)


@dataclass(slots=True)
class Account:
    """One budget's current period: its bounds as epoch seconds (cheap to compare), committed and reserved."""

    budget: Budget
    limit: int
    start: float = 0.0
    reset: float = 0.0
    committed: int = 0
    reserved: int = 0
    in_flight: int = 0
    hard: bool = False  # the budget's, kept here: read on every check
    closed: bool = False  # refuses while the ledger is not current (on_kafka_down=fail_closed)

    def __post_init__(self) -> None:
        self.hard = self.budget.hard
        self.closed = self.budget.on_kafka_down is KafkaDown.FAIL_CLOSED

    def roll(self, now: float) -> None:
        """Move to the period containing ``now``: spend and reservations of a past period no longer count."""
        window = budget_window(self.budget, datetime.fromtimestamp(now, UTC))
        self.start, self.reset = window.start.timestamp(), window.reset.timestamp()
        self.committed = self.reserved = self.in_flight = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.committed - self.reserved


class Scopes(NamedTuple):
    """The attribution a request is charged to: one value per scope kind ('' = none). A tuple: built per request."""

    key: str = ""
    team: str = ""
    project: str = ""
    user: str = ""


@dataclass(slots=True, eq=False)
class Reservation:
    """What one admitted request holds: the accounts it reserved in, the amount, and when (which period).

    One object per request, and the only one the check allocates (fewer objects for the garbage collector, which
    showed in benchmarks/budget_check.py): the accounts are the ledger's remembered list for the attribution,
    shared, never changed; the gate keeps the emitted event's id, encoded event and priced cost here too."""

    accounts: list[Account]
    amount: int
    started: float = 0.0  # the check's time: an account still in the period containing it is the one reserved in
    ledger: Ledger | None = None
    settled: bool = False
    event_id: str = ""
    payload: bytes = b""
    cost: int | None = None


class Refusal(Exception):  # noqa: N818 - a decision, rendered as a 429 by the gateway
    """A hard budget cannot fit this request (or cannot be checked: Kafka down with ``fail_closed``)."""

    def __init__(self, account: Account, worst: int, now: float, reason: str = "") -> None:
        self.budget, self.worst, self.reset = account.budget, worst, account.reset
        self.committed, self.reserved, self.limit = account.committed, account.reserved, account.limit
        self.retry_after = max(1, int(account.reset - now) + 1)
        when = datetime.fromtimestamp(account.reset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        b = self.budget
        head = (f"budget {b.name!r} ({b.scope.value} {b.scope_value!r}, ${b.amount_usd} per {b.period.value}, "
                f"{b.timezone})")
        detail = reason or (f"spent ${to_usd(self.committed):.6f} and ${to_usd(self.reserved):.6f} reserved by "
                            f"requests in flight; this request may cost up to ${to_usd(worst):.6f}")
        super().__init__(f"{head} would be exceeded: {detail}. It resets at {when}; nothing was forwarded")


@dataclass
class Ledger:
    """Every budget's account on this replica, indexed by (scope kind, value) for the per-request lookup."""

    budgets: Iterable[Budget] = ()
    by_scope: dict[tuple[ScopeKind, str], list[Account]] = field(default_factory=dict)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    kafka_ok: bool = True
    # (key, team, project, user) -> their accounts, as ``applicable`` found them; cleared by ``add``.
    memo: dict[tuple[str, ...], list[Account]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for budget in self.budgets:
            self.add(budget)

    def add(self, budget: Budget) -> Account:
        """Track ``budget`` (a replacement of one with the same name keeps its committed spend)."""
        self.memo.clear()
        for accounts in self.by_scope.values():
            for old in accounts:
                if old.budget.name == budget.name:
                    accounts.remove(old)
                    account = Account(budget, to_units(budget.amount_usd), old.start, old.reset, old.committed,
                                      old.reserved, old.in_flight)
                    self.by_scope.setdefault((budget.scope, budget.scope_value), []).append(account)
                    return account
        account = Account(budget, to_units(budget.amount_usd))
        self.by_scope.setdefault((budget.scope, budget.scope_value), []).append(account)
        return account

    def accounts(self) -> list[Account]:
        return [a for accounts in self.by_scope.values() for a in accounts]

    def applicable(self, scopes: tuple[str, str, str, str]) -> list[Account]:
        """The accounts of every budget on the request's key, team, project or user, in that order (a
        :class:`Scopes` or a plain tuple of the same four values: they hash alike). Remembered per attribution:
        one dict lookup on the request path instead of four (``add`` forgets them all)."""
        found = self.memo.get(scopes)
        if found is None:
            if len(self.memo) >= MEMO_SCOPES:
                self.memo.clear()
            get, found = self.by_scope.get, []
            for kind, value in zip(SCOPE_ORDER, scopes, strict=True):
                accounts = get((kind, value))
                if accounts:
                    found += accounts
            self.memo[tuple(scopes)] = found
        return found

    def reserve(self, scopes: Scopes, worst: int, now: float) -> Reservation | None:
        """Reserve ``worst`` units in every budget of ``scopes``; None when no budget applies.

        Raises :class:`Refusal` naming the first hard budget that cannot fit it (nothing is reserved then)."""
        accounts = self.applicable(scopes)
        return self.reserve_in(accounts, worst, now) if accounts else None

    def reserve_in(self, accounts: list[Account], worst: int, now: float) -> Reservation:
        """:meth:`reserve` in accounts the caller already looked up (:meth:`applicable`)."""
        for account in accounts:
            if now >= account.reset or now < account.start:
                account.roll(now)
            if not account.hard:
                continue
            if account.closed and not self.kafka_ok:
                raise Refusal(account, worst, now, "the usage topic is unreachable, so other replicas' spend "
                                                   "cannot be seen, and this budget fails closed")
            if account.committed + account.reserved + worst > account.limit:
                raise Refusal(account, worst, now)
        for account in accounts:
            account.reserved += worst
            account.in_flight += 1
        return Reservation(accounts, worst, now, self)

    def settle(self, reservation: Reservation, cost: int | None, event_id: str, started: float) -> None:
        """Release the reservation and commit the real cost (``None``, unpriced or unmetered: the reservation
        is committed instead, so usage we could not price still counts against the cap)."""
        if reservation.settled:
            return
        reservation.settled = True
        amount, at = reservation.amount, reservation.started
        spent = amount if cost is None else cost
        for account in reservation.accounts:
            if account.start <= at < account.reset:  # still the period it reserved in (else rolled: dropped)
                account.reserved -= amount
                account.in_flight -= 1
                if account.start <= started < account.reset:
                    account.committed += spent
        self._remember(event_id)

    def apply(self, event_id: str, scopes: Scopes, cost: int | None, started: float) -> bool:
        """Count a priced event from the usage topic (another replica's, or ours seen again: skipped).

        Returns whether it was counted."""
        if event_id in self.seen or not cost:
            return False
        self._remember(event_id)
        for account in self.applicable(scopes):
            if started >= account.reset:
                account.roll(started)
            if account.start <= started < account.reset:
                account.committed += cost
        return True

    def load(self, name: str, start: float, committed: int) -> None:
        """Set a budget's committed spend for the period starting at ``start`` (from the ledger, at start)."""
        for account in self.accounts():
            if account.budget.name == name:
                if account.start != start:
                    account.roll(start)
                account.committed += committed

    def _remember(self, event_id: str) -> None:
        seen = self.seen
        seen[event_id] = None
        if len(seen) > SEEN_IDS:
            seen.popitem(last=False)

    # This replica emitted the event and settles it later (commit_priced, once priced off the event loop): its copy
    # on the topic must not be counted meanwhile. The same method under its caller's name (no extra call per request).
    expect = _remember


def commit_priced(done: deque[Reservation]) -> None:
    """Settle reservations whose events were expected (:meth:`Ledger.expect`) and priced (``cost``, None:
    unpriced): :meth:`Ledger.settle` at the reservation's own time, without remembering the id again, in one loop
    (this runs per request on the event loop)."""
    while done:
        held = done.popleft()
        if held.settled:
            continue
        held.settled = True
        amount, at, cost = held.amount, held.started, held.cost
        spent = amount if cost is None else cost
        for account in held.accounts:
            if account.start <= at < account.reset:  # the period it reserved in, which its event started in
                account.reserved -= amount
                account.in_flight -= 1
                account.committed += spent


def overshoot_bound(replicas: int, in_flight: int, rate_per_s: float, delay_s: float, largest: Decimal) -> Decimal:
    """The worst-case overshoot (module docstring): ``(R - 1) * (N + L * d) * c_max``."""
    return (replicas - 1) * (in_flight + Decimal(str(rate_per_s)) * Decimal(str(delay_s))) * largest
