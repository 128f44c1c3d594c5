"""Self-hosted GPU cost as an effective-dated, append-only history in ClickHouse.

The config says what a backend costs; ClickHouse keeps what it cost, hour by hour, because the fully
loaded view (``gpu_cost_allocation``) bills every hour of a period, used or not. The rules:

* **Declared once.** The first time a config declares a backend's GPU cost, that moment is recorded in
  ``gpu_backend_declarations``. No period starts before it, so a month before the install bills no GPU hour.
* **A price without dates means "from now on".** When it differs from the period in force, that
  period is closed at now and a new one opens there; the log says so. Hours already past keep the
  price they were reported with.
* **Dated periods may describe the past, but the pricer never rewrites it.** A dated config that
  disagrees with the stored history before now is a retroactive correction: the pricer logs it and
  leaves those hours alone; ``aimeter reprice --since …`` applies it (a new version of each period,
  while ``gpu_cost_period_versions`` keeps every version ever written, so the as-charged history stays).
* A price change the pricer makes takes effect at the next whole minute, so the ingest path's per-minute
  tariffs (aimeter.pricer.tariff) stay exact.

Planning (:func:`plan_backend`) is pure; :func:`plan_sync` and :func:`apply_sync` do the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from aimeter.config import GatewayConfig, GpuCost
from aimeter.pricer.gpu import SECONDS_PER_HOUR

log = logging.getLogger(__name__)
TABLE = "gpu_cost_periods"
DECLARATIONS = "gpu_backend_declarations"
COLUMNS = ["backend", "effective_from", "effective_to", "gpu_type", "gpu_count", "usd_per_hour", "tokens_per_hour",
           "parallel_requests", "version", "is_deleted"]
# (gpu_type, gpu_count, usd_per_hour, tokens_per_hour, parallel_requests): what a period charges.
Values = tuple[str, int, Decimal, Decimal, int]


@dataclass(frozen=True)
class Period:
    """One stretch of a backend's history: [start, end), end None while in force."""

    start: datetime
    end: datetime | None
    values: Values

    def row(self, backend: str, version: int, deleted: int = 0) -> list[Any]:
        return [backend, self.start, self.end, *self.values, version, deleted]


@dataclass
class BackendPlan:
    """What one backend's history becomes, and what to tell the operator about it."""

    backend: str
    declared: datetime
    newly_declared: bool
    target: list[Period]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pending_since: datetime | None = None  # a retroactive correction the config asks for and nobody applied


def next_minute(moment: datetime) -> datetime:
    """The first whole minute at or after ``moment``."""
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def values_of(gpu: GpuCost) -> Values:
    return (gpu.gpu_type, gpu.gpu_count, gpu.usd_per_hour, gpu.sustained_tokens_per_second * SECONDS_PER_HOUR,
            gpu.parallel_requests)


def _earlier_end(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two ends, None meaning open."""
    return b if a is None else a if b is None else min(a, b)


def clip(periods: Iterable[Period], lo: datetime, hi: datetime | None) -> list[Period]:
    """The parts of ``periods`` inside [lo, hi)."""
    out = []
    for p in periods:
        start, end = max(p.start, lo), _earlier_end(p.end, hi)
        if end is None or start < end:
            out.append(Period(start, end, p.values))
    return out


def normalize(periods: Iterable[Period]) -> list[Period]:
    """Sorted, with touching periods of equal values merged (so an unchanged price never splits a period).
    Overlaps (two pricer replicas declaring a backend at once each write a period) resolve the same way
    everywhere: equal values merge into the earlier start; otherwise the later period wins from its start."""
    out: list[Period] = []
    for p in sorted(periods, key=lambda q: q.start):
        last = out[-1] if out else None
        if last is not None and (last.end is None or last.end >= p.start):
            if last.values == p.values:
                end = None if last.end is None or p.end is None else max(last.end, p.end)
                out[-1] = Period(last.start, end, p.values)
                continue
            if last.end is None or last.end > p.start:
                out[-1] = Period(last.start, p.start, last.values)
                if last.start == p.start:
                    out.pop()
        out.append(p)
    return out


def _undated(config_periods: Sequence[GpuCost]) -> bool:
    return len(config_periods) == 1 and config_periods[0].effective_from is None \
        and config_periods[0].effective_to is None


def wanted(config_periods: Sequence[GpuCost], stored: Sequence[Period], declared: datetime,
           start: datetime) -> list[Period]:
    """The history the config asks for. Undated: the stored past, then the config's price from ``start`` on.
    Dated: the config's periods as written, never before the declaration."""
    if _undated(config_periods):
        return normalize([*clip(stored, declared, start), Period(start, None, values_of(config_periods[0]))])
    return normalize(clip([Period(p.effective_from or declared, p.effective_to, values_of(p)) for p in config_periods],
                          declared, None))


def _usd(values: Values) -> str:
    return f"${values[2].normalize():f}/h"


def plan_backend(backend: str, config_periods: Sequence[GpuCost], stored: Sequence[Period], *,
                 declared: datetime | None, now: datetime, version: int,
                 correct_since: datetime | None = None) -> BackendPlan:
    """Pure. ``stored``: the backend's current periods; ``declared``: when it was first declared (None: never,
    so ``now`` becomes the declaration). The config's wishes apply from the next whole minute (a first
    declaration: from ``now``), or from ``correct_since`` for ``aimeter reprice``; before that the stored
    history stays as it is. The declaration itself needs no whole minute: the price book opens the first
    period's start (see :func:`history_config`), so it is never a price boundary."""
    newly = declared is None
    first = now if declared is None else declared
    boundary = next_minute(now)
    apply_from = first if newly else boundary
    if correct_since is not None:
        apply_from = min(correct_since, apply_from)
    want = wanted(config_periods, stored, first, boundary if stored else first)
    kept = normalize(clip(stored, first, None))
    target = normalize([*clip(kept, first, apply_from), *clip(want, apply_from, None)])
    plan = BackendPlan(backend, first, newly, target)
    if newly:
        plan.notes.append(f"gpu backend {backend!r}: first declared at {first:%Y-%m-%d %H:%M:%S} UTC; its GPU hours "
                          "are billed from then on, never before")
    plan.pending_since = _first_difference(clip(want, first, apply_from), clip(target, first, apply_from))
    if plan.pending_since is not None:
        plan.notes.append(
            f"gpu backend {backend!r}: the config changes the GPU cost of hours already reported (from "
            f"{plan.pending_since:%Y-%m-%d %H:%M} UTC): a retroactive correction, not applied by the pricer. Reports "
            f"keep the as-charged cost until `aimeter reprice --since {plan.pending_since:%Y-%m-%dT%H:%M}` applies it")
    in_force = next((p for p in kept if p.start <= now and (p.end is None or now < p.end)), None)
    if _undated(config_periods) and in_force is not None and in_force.values != values_of(config_periods[0]):
        plan.notes.append(
            f"gpu backend {backend!r}: price changed without dates ({_usd(in_force.values)} -> "
            f"{_usd(values_of(config_periods[0]))}); the period from {in_force.start:%Y-%m-%d %H:%M} is closed at "
            f"{boundary:%Y-%m-%d %H:%M} UTC and a new one opens then. Earlier hours keep {_usd(in_force.values)}; to "
            "correct them, give dated periods and run `aimeter reprice`")
    current = {p.start: p for p in stored}
    goal = {p.start: p for p in target}
    plan.rows = [p.row(backend, version) for start, p in goal.items() if current.get(start) != p]
    plan.rows += [p.row(backend, version, deleted=1) for start, p in current.items() if start not in goal]
    return plan


def _value_at(periods: Sequence[Period], moment: datetime) -> Values | None:
    return next((p.values for p in periods if p.start <= moment and (p.end is None or moment < p.end)), None)


def _first_difference(a: list[Period], b: list[Period]) -> datetime | None:
    """The first instant at which two histories charge differently (None: they never do)."""
    edges = sorted({t for p in (*a, *b) for t in (p.start, p.end) if t is not None})
    return next((t for t in edges if _value_at(a, t) != _value_at(b, t)), None)


@dataclass
class SyncPlan:
    backends: list[BackendPlan]
    version: int

    @property
    def rows(self) -> list[list[Any]]:
        return [r for b in self.backends for r in b.rows]

    @property
    def history(self) -> dict[str, list[Period]]:
        return {b.backend: b.target for b in self.backends}


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def read_stored(client: Client) -> tuple[dict[str, list[Period]], dict[str, datetime], int]:
    """The current periods per backend, the declaration moments, and the latest version written."""
    result = client.query(f"SELECT {', '.join(COLUMNS[:8])} FROM {TABLE} FINAL WHERE is_deleted = 0")  # noqa: S608
    stored: dict[str, list[Period]] = {}
    for row in result.result_rows:
        start = _utc(row[1])
        assert start is not None
        stored.setdefault(row[0], []).append(
            Period(start, _utc(row[2]), (row[3], int(row[4]), row[5], row[6], int(row[7]))))
    declared_rows = client.query(f"SELECT backend, min(declared_at) FROM {DECLARATIONS} GROUP BY backend")  # noqa: S608
    declared = {name: at.replace(tzinfo=UTC) if at.tzinfo is None else at for name, at in declared_rows.result_rows}
    latest = int(str(client.command(f"SELECT max(version) FROM {TABLE}") or 0))  # noqa: S608
    return stored, declared, latest


def plan_sync(client: Client, config: GatewayConfig, now: datetime | None = None,
              correct_since: datetime | None = None) -> SyncPlan:
    """What syncing would write. The pricer applies the config from now on; ``correct_since`` (reprice) from then."""
    moment = now or datetime.now(UTC)
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # what DateTime64(3) keeps
    stored, declared, latest = read_stored(client)
    plans = [plan_backend(name, backend.gpu_periods, stored.get(name, []), declared=declared.get(name), now=moment,
                          version=latest + 1, correct_since=correct_since)
             for name, backend in config.backends.items() if backend.gpu_periods]
    return SyncPlan(plans, latest + 1)


def apply_sync(client: Client, plan: SyncPlan) -> int:
    """Record new declarations, then write the period rows; returns the number of period rows written."""
    new = [[b.backend, b.declared] for b in plan.backends if b.newly_declared]
    if new:
        client.insert(DECLARATIONS, new, column_names=["backend", "declared_at"])
    rows = plan.rows
    if rows:
        client.insert(TABLE, rows, column_names=COLUMNS)
    return len(rows)


def sync_gpu_periods(client: Client, config: GatewayConfig, now: datetime | None = None,
                     correct_since: datetime | None = None) -> int:
    """Plan, log what the operator must know, write; returns the number of period rows written.

    It then plans once more and writes what that finds: nothing, unless another pricer replica declared the
    same backend at the same time (two overlapping periods), which the second pass merges into one."""
    plan = plan_sync(client, config, now, correct_since)
    for backend in plan.backends:
        for note in backend.notes:
            (log.warning if backend.pending_since or "changed" in note else log.info)("%s", note)
    written = apply_sync(client, plan)
    if written:
        written += apply_sync(client, plan_sync(client, config, now, correct_since))
    return written


@dataclass(frozen=True)
class GpuHistory:
    """Every backend's current periods (in order) and the moment each was first declared."""

    periods: Mapping[str, Sequence[Period]]
    declared: Mapping[str, datetime]


def read_history(client: Client) -> GpuHistory:
    stored, declared, _latest = read_stored(client)
    return GpuHistory({name: normalize(periods) for name, periods in stored.items()}, declared)


def planned_history(client: Client, plan: SyncPlan) -> GpuHistory:
    """The history as it would be once ``plan`` is written (for a dry run, which writes nothing)."""
    now = read_history(client)
    return GpuHistory({**now.periods, **plan.history},
                      {**now.declared, **{b.backend: b.declared for b in plan.backends}})


def history_config(config: GatewayConfig, history: GpuHistory) -> GatewayConfig:
    """The config with each self-hosted backend's GPU cost replaced by its stored history, so requests are
    priced by what the history says for their moment. A first period that starts at the declaration has an
    open start: a request served before the declaration was recorded (e.g. spooled before the pricer's first
    start) is priced at the first declared price, though no GPU hour before the declaration is ever billed."""
    backends = {}
    for name, backend in config.backends.items():
        periods = list(history.periods.get(name, ()))
        if not backend.gpu_periods or not periods:
            backends[name] = backend
            continue
        declared = history.declared.get(name, periods[0].start)
        gpus = [_as_gpu(p, backend.gpu_periods, open_start=i == 0 and p.start <= declared)
                for i, p in enumerate(periods)]
        backends[name] = backend.model_copy(update={"gpu": gpus})
    return config.model_copy(update={"backends": backends})


def _as_gpu(period: Period, declared: Sequence[GpuCost], *, open_start: bool) -> GpuCost:
    same = next((g for g in declared if values_of(g) == period.values), None)
    start = None if open_start else period.start
    if same is not None:
        return same.model_copy(update={"effective_from": start, "effective_to": period.end})
    gpu_type, count, usd, tokens, parallel = period.values
    per_second = (tokens / SECONDS_PER_HOUR).quantize(Decimal("0.000001")).normalize()
    return GpuCost.model_construct(gpu_type=gpu_type, gpu_count=count, usd_per_gpu_hour=None, usd_per_node_hour=usd,
                                   sustained_tokens_per_second=per_second, parallel_requests=parallel,
                                   effective_from=start, effective_to=period.end)
