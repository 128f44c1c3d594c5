"""``aimeter reconcile``: what the gateways emitted, per hour, against what ClickHouse holds.

Each gateway journals every event before its answer ends (``gateway/journal.py``); its per-hour
count is the counts file (``<data dir>/counts/<gateway id>.json``, segments already retired) plus
the journal segments still on disk, so the count never lags an answer, even after a ``kill -9``.
Any hour where ClickHouse holds fewer distinct events is a gap (lost or still in a spool); more is
a duplicate that escaped deduplication. Either exits non-zero.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aimeter.gateway.journal import emitted_counts as journal_counts
from aimeter.provider_books import cli as provider_cli
from aimeter.reports.format import EARLIEST, LATEST, parse_when, render
from aimeter.reports.sql import bound_window
from aimeter.settings import Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


def reconcile_sql(*, rollups: bool = True) -> str:
    """Per hour of [since, until): distinct events, priced rows, and the unpriced and unmetered among them;
    from the hourly rollups for clean whole hours and raw rows with FINAL for the rest (reports/rollup.py)."""
    window = bound_window(EARLIEST, LATEST)  # only its bound placeholders are used: {since:…}, {until:…}
    span = window.span()
    raw_where = window.where("started_at") + (f" AND {span.raw('started_at')}" if rollups else "")
    rolled = f"FROM usage_rollup WHERE {span.rolled()} AND source = "
    events = f"SELECT toStartOfHour(started_at) AS h, toUInt64(1) AS n FROM usage_events FINAL WHERE {raw_where}"  # noqa: S608
    costs = (f"SELECT toStartOfHour(started_at) AS h, toUInt64(1) AS n, toUInt64(pricing_status = 'unpriced') AS u, "  # noqa: S608
             f"toUInt64(pricing_status = 'unmetered') AS m FROM usage_costs FINAL WHERE {raw_where}")
    if rollups:
        events += f" UNION ALL SELECT hour, requests {rolled}'events'"
        costs += (" UNION ALL SELECT hour, requests, if(pricing_status = 'unpriced', requests, 0), "
                  f"if(pricing_status = 'unmetered', requests, 0) {rolled}'cost'")
    return f"""
SELECT formatDateTime(h, '%Y-%m-%dT%H:00Z') AS hour, e.events, c.priced, c.unpriced, c.unmetered
FROM (SELECT h, sum(n) AS events FROM ({events}) GROUP BY h) AS e
FULL OUTER JOIN
     (SELECT h, sum(n) AS priced, sum(u) AS unpriced, sum(m) AS unmetered FROM ({costs}) GROUP BY h) AS c
USING h
ORDER BY hour
"""  # noqa: S608 - fixed text; values are bound parameters


RECONCILE_SQL = reconcile_sql()


@dataclass(frozen=True)
class HourCheck:
    """One hour. ``priced`` counts every stored cost row; ``unpriced`` and ``unmetered`` are the rows among
    them with no cost (no price known; a 2xx answer with no readable usage): not a gap, never a silent $0."""

    hour: str
    emitted: int
    stored: int
    priced: int
    unpriced: int = 0
    unmetered: int = 0

    @property
    def verdict(self) -> str:
        if self.stored < self.emitted or self.priced < self.stored:
            return "GAP"
        if self.stored > self.emitted or self.priced > self.stored:
            return "DUPLICATE"
        return "ok"


def emitted_counts(counts_dir: Path, spool_dir: Path) -> Counter[str]:
    """Sum of every gateway's per-hour counts: its counts file plus its journal segments not folded in yet."""
    gateways = {p.stem for p in counts_dir.glob("*.json")} | {p.name.removesuffix(".journal")
                                                              for p in spool_dir.glob("*.journal")}
    total: Counter[str] = Counter()
    for gateway in sorted(gateways):
        total.update(journal_counts(counts_dir / f"{gateway}.json", spool_dir / f"{gateway}.journal"))
    return total


def compare(emitted: Counter[str], stored: dict[str, tuple[int, ...]], since: datetime,
            until: datetime) -> list[HourCheck]:
    """Pure: one line per hour that either side knows, inside [since, until). ``stored``: per hour (events,
    cost rows[, unpriced, unmetered])."""
    lo, hi = since.strftime("%Y-%m-%dT%H:00Z"), until.strftime("%Y-%m-%dT%H:%MZ")
    hours = sorted({h for h in emitted if lo <= h < hi} | set(stored))
    return [HourCheck(h, emitted.get(h, 0), *stored.get(h, (0, 0))) for h in hours]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reconcile", help="compare gateway-emitted event counts with ClickHouse; non-zero on a gap")
    p.add_argument("--since", required=True, help="ISO date/time (UTC) or relative like 24h")
    p.add_argument("--until", default="now")
    provider_cli.add_arguments(p)
    p.set_defaults(func=cmd_reconcile)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.store.client import report_client  # noqa: PLC0415 - keep CLI start fast

    now = datetime.now(UTC)
    since, until = parse_when(args.since, now), parse_when(args.until, now)
    client = report_client(settings.resolved_clickhouse_url, settings.query_port)
    if args.provider:
        return cmd_provider_books(args, settings, client, since, until)
    rows = client.query(RECONCILE_SQL, parameters={"since": since, "until": until}).result_rows
    counts = emitted_counts(settings.data_dir / "counts", settings.resolved_spool_dir)
    checks = compare(counts, {r[0]: tuple(r[1:]) for r in rows}, since, until)
    print(render(["hour", "emitted", "stored", "priced", "unpriced", "unmetered", "verdict"],
                 [[c.hour, c.emitted, c.stored, c.priced, c.unpriced, c.unmetered, c.verdict] for c in checks]))
    spool_dir = settings.resolved_spool_dir
    spool = sum(p.stat().st_size for p in spool_dir.glob("*.jsonl*") if p.is_file()) if spool_dir.exists() else 0
    if spool:
        print(f"note: {spool} bytes of events are still in gateway spools (they count as a gap until replayed)")
    bad = [c for c in checks if c.verdict != "ok"]
    print(f"{len(checks)} hours checked, {len(bad)} with a gap or duplicate")
    unpriced, unmetered = sum(c.unpriced for c in checks), sum(c.unmetered for c in checks)
    if unpriced or unmetered:
        print(f"{unpriced} unpriced and {unmetered} unmetered requests have no cost (see the pricer's log for what "
              "to do); they are counted, never $0")
    return 1 if bad else 0


def cmd_provider_books(args: argparse.Namespace, settings: Settings, client: Client, since: datetime,
                       until: datetime) -> int:
    """``--provider``: the provider's own usage and cost reports against the ledger (``aimeter.provider_books``)."""
    from aimeter.config import load_config  # noqa: PLC0415
    from aimeter.reprice import open_for_writing  # noqa: PLC0415
    from aimeter.store.client import chdb_path  # noqa: PLC0415
    from aimeter.store.migrations import migrate  # noqa: PLC0415

    url = settings.resolved_clickhouse_url
    config_path = args.config or settings.config
    config = load_config(config_path) if config_path else None

    def embedded_writer() -> Client:
        """Only if no pricer holds the store (else: not stored); owning it, bring its schema up to date."""
        writer = open_for_writing(url)
        migrate(writer)
        return writer

    # Server mode: the report client writes too (the pricer or `aimeter migrate` created the table).
    writer = (lambda: client) if chdb_path(url) is None else embedded_writer
    return provider_cli.run(args, client, writer, config, provider_cli.environ(), since=since, until=until)
