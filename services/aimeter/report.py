"""Pure helpers for reports: parsing report periods and rendering rows as table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

_RELATIVE = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime) -> datetime:
    """``now``, a relative span back from now (``90m``, ``24h``, ``7d``, ``2w``), or ISO 8601 (UTC if naive)."""
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.fullmatch(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        hint = "use ISO 8601 (2026-11-01 or 2026-11-01T12:00) or a span like 24h or 7d"
        raise ValueError(f"cannot read time {text!r}: {hint}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, Decimal):
        text = f"{value:.6f}"
        # The idle GPU row carries the hour's sub-picodollar rounding remainder, which can be negative:
        # shown to 6 places it read "-0.000000", which looks like a refund. The exact value is in csv/json.
        return text[1:] if text.startswith("-") and not text.strip("-0.") else text
    return str(value)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[("" if v is None else str(v)) for v in r] for r in rows])
        return out.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths, strict=True)))
    body = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
            for r in cells]
    return "\n".join([line, "-" * len(line), *body]) if body else line + "\n(no rows)"
