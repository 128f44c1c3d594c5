"""``aimeter reconcile``: what the gateways emitted, per hour, against what ClickHouse holds.

Each gateway journals every event before its answer ends (``gateway/journal.py``) and sends its cumulative
per-hour count of them to the compacted topic ``ai.counts.v1`` every few seconds and at stop
(``gateway/publisher.py``); the pricer stores the counts in ``gateway_counts`` (``pricer/gateway_counts.py``).
So reconcile reads ClickHouse only, and works for any number of gateways on any number of hosts. A count
trails its gateway by a few seconds (the send interval, a journal read, the counts consumer's insert).
Any hour where ClickHouse holds fewer distinct events than the gateways' counts sum to is a gap (lost, still
in a spool, or not stored yet); more is a duplicate that escaped deduplication, or a count not sent yet.
Either exits non-zero.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aimeter.events import COUNTS_TOPIC
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
# The latest (highest) cumulative count per gateway and hour whose start lies in [hour of since, until).
COUNTS_SQL = """
SELECT gateway_id, formatDateTime(hour, '%Y-%m-%dT%H:00Z') AS hour_label, emitted, produced_at
FROM gateway_counts FINAL
WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')}) AND hour < {until:DateTime64(3, 'UTC')}
ORDER BY hour_label, gateway_id
"""


@dataclass(frozen=True)
class GatewayTotal:
    """One gateway's counts inside the window: hours it reported, events it emitted, its newest report."""

    gateway_id: str
    hours: int
    emitted: int
    last_report: datetime


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


def emitted_counts(rows: Sequence[Sequence[Any]]) -> Counter[str]:
    """Pure: every gateway's counts summed per hour; ``rows`` as ``COUNTS_SQL`` returns them."""
    total: Counter[str] = Counter()
    for _, hour, emitted, _ in rows:
        total[hour] += int(emitted)
    return total


def gateway_totals(rows: Sequence[Sequence[Any]]) -> list[GatewayTotal]:
    """Pure: one line per gateway that reported a count in the window, by name."""
    by_gateway: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        by_gateway.setdefault(str(row[0]), []).append(row)
    return [GatewayTotal(gateway, len(mine), sum(int(r[2]) for r in mine), max(r[3] for r in mine))
            for gateway, mine in sorted(by_gateway.items())]


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
    window = {"since": since, "until": until}
    rows = client.query(RECONCILE_SQL, parameters=window).result_rows
    counted = client.query(COUNTS_SQL, parameters=window).result_rows
    checks = compare(emitted_counts(counted), {r[0]: tuple(r[1:]) for r in rows}, since, until)
    print(render(["hour", "emitted", "stored", "priced", "unpriced", "unmetered", "verdict"],
                 [[c.hour, c.emitted, c.stored, c.priced, c.unpriced, c.unmetered, c.verdict] for c in checks]))
    gateways = gateway_totals(counted)
    print(render(["gateway", "hours", "emitted", "last count sent"],
                 [[g.gateway_id, g.hours, g.emitted, f"{g.last_report:%Y-%m-%d %H:%M:%S}Z"] for g in gateways]))
    print(f"{len(gateways)} gateway(s) sent counts to {COUNTS_TOPIC}; a running gateway sends its counts every few "
          "seconds, so the newest hour may trail it by that")
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
