"""``aimeter reprice``: re-price a period from the immutable usage ledger under the current price book.

It reads ``usage_events FINAL`` page by page (keyset on ``started_at, event_id``), prices every
event again, and inserts a new ``usage_costs`` row with the next ``rating_version`` only where
the price changed. ``usage_costs FINAL`` then shows the new price and totals never double;
``usage_cost_versions`` (filled by a materialized view) keeps the as-charged version, so the
correction per team stays queryable (``cost_corrections``). A run that wrote something is
logged in ``rating_runs``.

Who may write, in embedded mode: the chDB directory belongs to one process. While the pricer
runs it owns the store and serves only a read-only endpoint, so a real re-rating needs the
pricer stopped (a clear error says so, nothing is written); ``--dry-run`` only reads, so it works
through the endpoint while the pricer runs. With a ClickHouse server, both always work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from aimeter.config import GatewayConfig
from aimeter.pricer.gpu_periods import (
    SyncPlan,
    history_config,
    plan_sync,
    planned_history,
    read_history,
    sync_gpu_periods,
)
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rerate import COMPARED, Plan, plan_page
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, event_from_row
from aimeter.reports import queries
from aimeter.reports.format import amount, render
from aimeter.store.client import chdb_path, get_client
from aimeter.store.migrations import migrate

PAGE_SIZE = 5000


class StoreBusyError(RuntimeError):
    """The embedded store is held by another process; nothing was written."""


@dataclass
class Progress:
    done: int
    total: int
    changed: int
    elapsed_s: float

    def line(self) -> str:
        share = f"{100 * self.done / self.total:.1f}%" if self.total else "100%"
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"reprice: {self.done:,}/{self.total:,} events ({share}), {rate:,.0f} events/s, "
                f"{self.changed:,} changed")


@dataclass
class Report:
    since: datetime
    until: datetime
    rating_version: int
    price_version: str
    dry_run: bool
    plan: Plan = field(default_factory=Plan)
    written: int = 0


def open_for_writing(url: str) -> Client:
    """A writing client; in embedded mode, fail clearly when another process holds the directory."""
    try:
        return get_client(url)
    except ClickHouseError as exc:
        path = chdb_path(url)
        if path is None:
            raise
        raise StoreBusyError(
            f"the embedded ClickHouse store {path} is in use by another process (a running `aimeter pricer` or "
            "`aimeter up` owns it and serves only a read-only endpoint). Stop it, run `aimeter reprice` again, then "
            f"start the pricer; nothing was written. `--dry-run` works while the pricer runs. ({exc})"
        ) from None


def _current(client: Client, ids: list[Any], since: datetime, until: datetime) -> dict[Any, dict[str, Any]]:
    sql, params = queries.current_costs_query(COMPARED, ids, since, until)
    result = client.query(sql, parameters=params)
    return {row[0]: dict(zip(COMPARED, row[1:], strict=True)) for row in result.result_rows}


def _pages(client: Client, since: datetime, until: datetime, size: int) -> Any:
    after = None
    while True:
        sql, params = queries.events_page_query(EVENT_COLUMNS, since, until, after, size)
        rows = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in client.query(sql, parameters=params).result_rows]
        if not rows:
            return
        yield [event_from_row(r) for r in rows]
        after = (rows[-1]["started_at"], rows[-1]["event_id"])


def reprice(client: Client, book: PriceBook, since: datetime, until: datetime, *, dry_run: bool,
            page_size: int = PAGE_SIZE, progress: Callable[[Progress], None] | None = None,
            clock: Callable[[], float] = time.monotonic) -> Report:
    """Re-rate [since, until). With ``dry_run`` nothing is written (the client may be read-only)."""
    sql, params = queries.window_count_query(since, until)
    total = int(str(client.command(sql, parameters=params)))
    version = int(str(client.command(queries.latest_rating_version_query()) or 0)) + 1
    report = Report(since, until, version, book.version, dry_run)
    started, started_at = clock(), datetime.now(UTC)
    for events in _pages(client, since, until, page_size):
        current = _current(client, [e.event_id for e in events], since, until)
        plan = plan_page(events, current, book, version, datetime.now(UTC))
        if plan.rows and not dry_run:
            token = f"reprice:{version}:{events[0].event_id}:{events[-1].event_id}"
            client.insert("usage_costs", plan.rows, column_names=COST_COLUMNS,
                          settings={"insert_deduplication_token": token})
            report.written += len(plan.rows)
        report.plan.merge(plan)
        if progress is not None:
            progress(Progress(report.plan.totals.events, total, report.plan.totals.changed, clock() - started))
    if report.written:
        _log_run(client, report, started_at)
    return report


def _log_run(client: Client, report: Report, started_at: datetime) -> None:
    totals = report.plan.totals
    client.insert("rating_runs", [[report.rating_version, report.since, report.until, started_at, datetime.now(UTC),
                                   totals.events, totals.changed, totals.before, totals.after, report.price_version]],
                  column_names=["rating_version", "since", "until", "started_at", "finished_at", "events", "changed",
                                "before_cost_usd", "after_cost_usd", "price_version"])


def usd(value: Decimal) -> str:
    return amount(value, dollar=True, grouped=True)


def render_report(report: Report) -> str:
    """Before-and-after totals, then per team; cost figures are exact to the cent, shown to 6 places."""
    t = report.plan.totals
    head = [
        f"reprice {report.since:%Y-%m-%d %H:%M} .. {report.until:%Y-%m-%d %H:%M} UTC under {report.price_version}",
        f"events: {t.events:,}   changed: {t.changed:,}   unpriced before: {t.unpriced_before:,}   "
        f"unpriced after: {t.unpriced_after:,}",
        f"total before: {usd(t.before)}   after: {usd(t.after)}   difference: {usd(t.difference)}",
        "",
    ]
    by_team = sorted(report.plan.by_team.items())
    rows = [[team, s.events, s.changed, s.before, s.after, s.difference] for team, s in by_team]
    table = render(["team", "events", "changed", "before_usd", "after_usd", "difference_usd"], rows)
    if report.dry_run:
        tail = f"dry run: nothing was written (a real run would write {t.changed:,} rows as rating_version " \
               f"{report.rating_version})"
    elif report.written:
        tail = f"wrote {report.written:,} priced rows as rating_version {report.rating_version}; as-charged costs " \
               "stay in usage_cost_versions (see the cost_corrections view)"
    else:
        tail = "nothing changed: no rows written"
    return "\n".join([*head, table, "", tail])


def run_command(url: str, reader: Callable[[], Client], config: GatewayConfig, book: PriceBook, *,
                since: datetime, until: datetime, dry_run: bool, out: TextIO, err: TextIO) -> int:
    """The CLI's side: pick the client (read-only endpoint for a dry run), report progress to ``err``."""
    if until <= since:
        raise ValueError(f"--until ({until:%Y-%m-%d %H:%M}) must be after --since ({since:%Y-%m-%d %H:%M})")
    if dry_run:
        client = reader()
        plan = plan_sync(client, config, correct_since=since)
        history = planned_history(client, plan)
        gpu_note = _gpu_plan_note(plan)
    else:
        client = open_for_writing(url)
        migrate(client)
        before = gpu_cost(client, since, until)
        written = sync_gpu_periods(client, config, correct_since=since)
        history = read_history(client)
        gpu_note = _gpu_written_note(written, before, gpu_cost(client, since, until))
    book = PriceBook(history_config(config, history), book.overrides)
    report = reprice(client, book, since, until, dry_run=dry_run, progress=lambda p: print(p.line(), file=err))
    if not dry_run:  # the re-rated hours are dirty (raw rows, exact): roll them up again now
        from aimeter.reports.rollup import refresh  # noqa: PLC0415

        done = refresh(client)
        print(f"rollups: {done.computed} hours recomputed", file=err)
    print(render_report(report), file=out)
    print(gpu_note, file=out)
    return 0


def gpu_cost(client: Client, since: datetime, until: datetime) -> Decimal:
    sql, params = queries.gpu_cost_query(since, until)
    return Decimal(str(client.command(sql, parameters=params) or 0))


def _gpu_plan_note(plan: SyncPlan) -> str:
    if not plan.rows:
        return "GPU cost periods: nothing to correct"
    changed = ", ".join(sorted({b.backend for b in plan.backends if b.rows}))
    return (f"dry run: GPU cost periods of {changed} would get {len(plan.rows)} new period versions "
            f"(version {plan.version}); fully loaded figures change once a real run writes them")


def _gpu_written_note(written: int, before: Decimal, after: Decimal) -> str:
    if not written:
        return "GPU cost periods: nothing to correct"
    return (f"GPU cost periods corrected: {written} period versions written; fully loaded GPU cost of the window "
            f"before {usd(before)}, after {usd(after)}, correction {usd(after - before)}. Every earlier version "
            "stays in gpu_cost_period_versions (the as-charged history)")
