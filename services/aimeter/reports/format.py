"""Pure helpers for reports: parsing report periods and rendering rows as table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

_RELATIVE = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_WIDE = Context(prec=80)  # Decimal(38, 12) amounts have up to 38 digits: more than the default context's 28


# What a DateTime64 column holds: a report period outside it is an input error, not a ClickHouse traceback.
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)
# OWASP's CSV injection rule: a text cell starting with one of these is a formula to a spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def in_range(moment: datetime, text: str) -> datetime:
    """``moment`` if ClickHouse can store it, else a one-line error naming the input."""
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(f"time {text!r} is out of range: reports cover {EARLIEST:%Y-%m-%d} .. {LATEST:%Y-%m-%d} UTC")
    return moment


def parse_when(text: str, now: datetime) -> datetime:
    """``now``, a relative span back from now (``90m``, ``24h``, ``7d``, ``2w``), or ISO 8601 (UTC if naive)."""
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.fullmatch(text)
    if match:
        try:
            return in_range(now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}), text)
        except OverflowError:
            raise ValueError(f"time {text!r} is out of range: reports cover {EARLIEST:%Y-%m-%d} .. "
                             f"{LATEST:%Y-%m-%d} UTC") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        hint = "use ISO 8601 (2026-11-01 or 2026-11-01T12:00) or a span like 24h or 7d"
        raise ValueError(f"cannot read time {text!r}: {hint}") from None
    return in_range(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), text)


def amount(value: Decimal, places: int = 6, *, dollar: bool = False, grouped: bool = False,
           rounding: str = ROUND_HALF_EVEN) -> str:
    """Every report's one spelling of an amount for people: positional, rounded to ``places``, never "-0.00"
    (the idle GPU row's sub-picodollar rounding remainder can be negative and must not read as a refund)."""
    shown = value.quantize(Decimal(1).scaleb(-places), rounding=rounding, context=_WIDE)
    size = shown.copy_abs()  # (abs() would round to the default context's 28 digits)
    body = f"{size:,f}" if grouped else f"{size:f}"
    return ("-" if shown < 0 else "") + ("$" if dollar else "") + body


def decimal_text(value: Decimal) -> str:
    """Every report's one spelling of an exact amount: positional, all stored places ("0.000000000000",
    never "0E-12")."""
    return f"{value:f}"


def plain(value: Any) -> Any:
    """A value as machine formats carry it: Decimals as exact decimal text (so no JSON reader makes a float)."""
    return decimal_text(value) if isinstance(value, Decimal) else value


def csv_cell(value: Any) -> str:
    """A CSV cell: empty for NULL, exact text for numbers; a text cell that a spreadsheet would run as a
    formula gets a leading ``'``. Numbers (negative ones included) are numbers, never neutralised."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, bool | int | float):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, Decimal):
        return amount(value)  # the exact value is in csv/json
    return str(value)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([{c: plain(v) for c, v in zip(columns, r, strict=True)} for r in rows], default=str,
                          indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([csv_cell(c) for c in columns])
        writer.writerows([[csv_cell(v) for v in r] for r in rows])
        return out.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths, strict=True)))
    body = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
            for r in cells]
    return "\n".join([line, "-" * len(line), *body]) if body else line + "\n(no rows)"
