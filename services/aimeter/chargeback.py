"""``aimeter chargeback --month 2026-11 --by team|project``: what each team (or project) owes for a month.

The figures come from the same SQL builder as the Chargeback dashboard (store/chargeback_sql.py),
over the calendar month in UTC, ``[first day 00:00, next month's first day)``. Reading goes through
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

from aimeter.report import render
from aimeter.settings import Settings
from aimeter.store.chargeback_sql import (
    CHARGEBACK_DIMENSIONS,
    MEASURES,
    MONEY,
    bound_window,
    chargeback_query,
    checked_dimension,
    daily_query,
)

_MONTH = re.compile(r"(\d{4})-(\d{2})")
TITLE = ("cost_usd: marginal (as charged per request); loaded: paid APIs + whole GPU hours (idle apart); "
         "savings: reference minus GPU cost")


@dataclass(frozen=True)
class Chargeback:
    """One month's lines per key, their total, and fully loaded spend per day and key (for charts)."""

    month: str
    by: str
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    daily: list[tuple[date, str, Decimal]]

    @property
    def columns(self) -> list[str]:
        return [self.by, *MEASURES]


def month_window(text: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` -> [first instant of the month, first instant of the next), UTC."""
    match = _MONTH.fullmatch(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"--month must be YYYY-MM (e.g. 2026-11), got {text!r}")
    year, month = int(match.group(1)), int(match.group(2))
    since = datetime(year, month, 1, tzinfo=UTC)
    return since, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Column sums. Marginal cost stays None only if no line has one (all unpriced): never a silent 0."""
    total: dict[str, Any] = {}
    for name in MEASURES:
        values = [r[name] for r in rows if r[name] is not None]
        zero = Decimal(0) if name in MONEY else 0
        total[name] = sum(values, zero) if values or name != "cost_usd" else None
    return total


def fetch(client: Client, month: str, by: str) -> Chargeback:
    since, until = month_window(month)
    window = bound_window(since, until)
    result = client.query(*chargeback_query(checked_dimension(by), window))
    rows = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    lines = [{by: r["key"], **{m: r[m] for m in MEASURES}} for r in rows]
    daily = client.query(*daily_query(by, window)).result_rows
    return Chargeback(month, by, lines, totals(lines), [(d, k, v) for d, k, v in daily])


def _plain(value: Any) -> Any:
    """Decimals in positional notation ("0.000000000000", never "0E-12"), exact to the stored 12 places."""
    return f"{value:f}" if isinstance(value, Decimal) else value


def as_json(report: Chargeback) -> str:
    """Money as decimal strings, so no JSON reader turns it into a float."""
    body = {"month": report.month, "by": report.by, "currency": "USD",
            "rows": [{k: _plain(v) for k, v in r.items()} for r in report.rows],
            "total": {k: _plain(v) for k, v in report.total.items()}}
    return json.dumps(body, indent=2)


def as_text(report: Chargeback, fmt: str) -> str:
    if fmt == "json":
        return as_json(report)
    if fmt == "html":
        from aimeter.chargeback_html import render_html  # noqa: PLC0415 - only the html format needs it

        return render_html(report)
    lines = [[r[c] for c in report.columns] for r in report.rows]
    lines.append(["TOTAL", *(report.total[m] for m in MEASURES)])
    if fmt == "csv":
        return render(["month", *report.columns], [[report.month, *map(_plain, line)] for line in lines], "csv")
    return (f"chargeback by {report.by}, {report.month} (UTC); {TITLE}\n"
            + render(report.columns, lines, "table"))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("chargeback", help="one month's cost per team or project, with a grand total")
    parser.add_argument("--month", required=True, help="calendar month in UTC, YYYY-MM")
    parser.add_argument("--by", default="team", choices=CHARGEBACK_DIMENSIONS)
    parser.add_argument("--format", default="table", choices=["table", "csv", "json", "html"])
    parser.add_argument("--out", type=Path, help="write to this file instead of standard output")
    parser.set_defaults(func=cmd_chargeback)


def cmd_chargeback(args: argparse.Namespace, settings: Settings) -> int:
    from aimeter.store.client import report_client  # noqa: PLC0415 - keep CLI start fast

    month_window(args.month)  # a bad month is reported before connecting
    client = report_client(settings.resolved_clickhouse_url, settings.query_port)
    text = as_text(fetch(client, args.month, args.by), args.format)
    if args.out is None:
        print(text)
        return 0
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.format}, chargeback by {args.by} for {args.month})", file=sys.stderr)
    return 0
