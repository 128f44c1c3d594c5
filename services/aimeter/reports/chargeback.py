"""``aimeter chargeback --month 2026-11 --by team|project``: what each team (or project) owes for a month.

The figures come from the same SQL builder as the Chargeback dashboard (reports/sql.py),
over the calendar month in UTC, ``[first day 00:00, next month's first day)``, stopped at now for the
current month ("month to date": no future hour is billed). Reading goes through
``report_client``: in embedded mode the pricer owns chDB and answers on its read-only endpoint.
The grand total is the exact Decimal sum of the lines, idle GPU capacity included.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from aimeter.reports import clean_first
from aimeter.reports.format import EARLIEST, LATEST, plain, render
from aimeter.reports.sql import (
    CHARGEBACK_DIMENSIONS,
    MEASURES,
    MONEY,
    bound_window,
    chargeback_query,
    checked_dimension,
    daily_query,
    owner_of,
)
from aimeter.settings import Settings

_MONTH = re.compile(r"(\d{4})-(\d{2})")
TITLE = ("cost_usd: marginal (as charged per request); loaded: paid APIs + whole GPU hours (idle apart); "
         "savings: reference minus GPU cost")


@dataclass(frozen=True)
class Chargeback:
    """One month's lines per key (per team and key, by project), their total, and fully loaded spend per day
    and key (for charts). ``until`` is where the period stopped: the month's end, or now for the current month."""

    month: str
    by: str
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    daily: list[tuple[date, str, Decimal]]
    until: datetime | None = None
    to_date: bool = False

    @property
    def labels(self) -> list[str]:
        owner = owner_of(self.by)
        return [self.by] if owner is None else [owner, self.by]

    @property
    def columns(self) -> list[str]:
        return [*self.labels, *MEASURES]

    @property
    def period(self) -> str:
        """How the report names its period: "2026-12, month to date (until 2026-12-06 19:40 UTC)"."""
        if self.to_date and self.until is not None:
            return f"{self.month}, month to date (until {self.until:%Y-%m-%d %H:%M} UTC)"
        return f"{self.month} (UTC)"


def month_window(text: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` -> [first instant of the month, first instant of the next), UTC."""
    match = _MONTH.fullmatch(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"--month must be YYYY-MM (e.g. 2026-11), got {text!r}")
    year, month = int(match.group(1)), int(match.group(2))
    if not EARLIEST.year <= year < LATEST.year:
        raise ValueError(f"--month {text!r} is out of range: reports cover {EARLIEST.year}-01 .. {LATEST.year - 1}-12")
    since = datetime(year, month, 1, tzinfo=UTC)
    return since, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def report_window(month: str, now: datetime) -> tuple[datetime, datetime, bool]:
    """The month's window as reported at ``now``: it stops at now (no future hour is billed); the flag says
    whether it did (the current month is "month to date")."""
    since, end = month_window(month)
    until = min(end, max(now, since))
    return since, until, until < end


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Column sums. Marginal cost stays None only if no line has one (all unpriced): never a silent 0."""
    total: dict[str, Any] = {}
    for name in MEASURES:
        values = [r[name] for r in rows if r[name] is not None]
        zero = Decimal(0) if name in MONEY else 0
        total[name] = sum(values, zero) if values or name != "cost_usd" else None
    return total


def fetch(client: Client, month: str, by: str, now: datetime | None = None) -> Chargeback:
    since, until, to_date = report_window(month, now or datetime.now(UTC))
    window = bound_window(since, until)
    owner = owner_of(checked_dimension(by))
    # A past month is normally all rolled up: skip planning the raw GPU tail (clean_first.py says how).
    result = clean_first.query(client, lambda w: chargeback_query(by, w, owner=owner), window, whole_hours=not to_date)
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    labels = [by] if owner is None else [owner, by]
    lines = [{**{k: r["key" if k == by else k] for k in labels}, **{m: r[m] for m in MEASURES}} for r in rows]
    daily = clean_first.query(client, lambda w: daily_query(by, w), window, whole_hours=not to_date).result_rows
    return Chargeback(month, by, lines, totals(lines), [(d, k, v) for d, k, v in daily], until, to_date)


def as_json(report: Chargeback) -> str:
    """Money as decimal strings, so no JSON reader turns it into a float."""
    body = {"month": report.month, "by": report.by, "currency": "USD", "month_to_date": report.to_date,
            "until": report.until.isoformat() if report.until else None,
            "rows": [{k: plain(v) for k, v in r.items()} for r in report.rows],
            "total": {k: plain(v) for k, v in report.total.items()}}
    return json.dumps(body, indent=2)


def as_text(report: Chargeback, fmt: str) -> str:
    if fmt == "json":
        return as_json(report)
    if fmt == "html":
        from aimeter.reports.chargeback_html import render_html  # noqa: PLC0415 - only the html format needs it

        return render_html(report)
    lines = [[r[c] for c in report.columns] for r in report.rows]
    blanks = [""] * (len(report.labels) - 1)
    lines.append(["TOTAL", *blanks, *(report.total[m] for m in MEASURES)])
    if fmt == "csv":
        return render(["month", *report.columns], [[report.month, *line] for line in lines], "csv")
    return (f"chargeback by {report.by}, {report.period}; {TITLE}\n"
            + render(report.columns, lines, "table"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("chargeback", help="one month's cost per team or project, with a grand total")
    parser.add_argument("--month", required=True, help="calendar month in UTC, YYYY-MM")
    parser.add_argument("--by", default="team", choices=CHARGEBACK_DIMENSIONS)
    parser.add_argument("--format", default="table", choices=["table", "csv", "json", "html"])
    parser.add_argument("--out", type=Path, help="write to this file instead of standard output")
    parser.set_defaults(func=cmd_chargeback)


def cmd_chargeback(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.store.client import report_client  # noqa: PLC0415 - keep CLI start fast

    month_window(args.month)  # a bad month is reported before connecting (the current month stops at now)
    client = report_client(settings.resolved_clickhouse_url, settings.query_port)
    text = as_text(fetch(client, args.month, args.by), args.format)
    if args.out is None:
        print(text)
        return 0
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.format}, chargeback by {args.by} for {args.month})", file=sys.stderr)
    return 0
