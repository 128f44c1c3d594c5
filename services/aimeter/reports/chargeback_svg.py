"""Inline SVG bar charts for the HTML chargeback report (pure; no script, no external asset).

Server-side SVG renders the same in every browser and mail client and survives being forwarded
as one file. Bar lengths are computed with Decimal (money never goes through float) and written
with one decimal place. Bars are solid fills with crisp edges, so their colours can be checked
pixel by pixel in a screenshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from html import escape

from aimeter.reports.format import amount

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
IDLE_COLOR = "#9e9e9e"
PROPRIETARY_COLOR, SELF_HOSTED_COLOR, REFERENCE_COLOR = "#4e79a7", "#59a14f", "#f28e2b"
TENTH = Decimal("0.1")


def px(value: Decimal) -> str:
    return str(value.quantize(TENTH, rounding=ROUND_HALF_EVEN))


def usd(value: Decimal) -> str:
    """Dollars and cents, rounded half up as on an invoice (the exact figures are in the CSV and JSON)."""
    return amount(value, 2, dollar=True, grouped=True, rounding=ROUND_HALF_UP)


def key_colors(keys: Sequence[str]) -> dict[str, str]:
    """A stable colour per key (sorted order); ``idle`` is always grey."""
    named = sorted(k for k in keys if k != "idle")
    colors = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(named)}
    return colors | ({"idle": IDLE_COLOR} if "idle" in keys else {})


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" shape-rendering="crispEdges">' + "".join(body) + "</svg>")


Box = tuple[Decimal, Decimal, Decimal, Decimal]  # x, y, width, height


def _rect(box: Box, color: str, title: str) -> str:
    x, y, w, h = box
    return (f'<rect x="{px(x)}" y="{px(y)}" width="{px(w)}" height="{px(h)}" fill="{color}">'
            f"<title>{escape(title)}</title></rect>")


def _text(x: Decimal | int | str, y: Decimal | int, text: str, anchor: str = "start") -> str:
    return f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="12">{escape(text)}</text>'


def legend(colors: Mapping[str, str], y: int) -> list[str]:
    """Swatches and names in one line; each entry as wide as its name (about 7 px a character at 12 px)."""
    items, x = [], 60
    for name, color in colors.items():
        items += [_rect((Decimal(x), Decimal(y), Decimal(12), Decimal(12)), color, name), _text(x + 16, y + 11, name)]
        x += 16 + 7 * len(name) + 24
    return items


def stacked_columns(columns: Sequence[str], stacks: Mapping[str, Mapping[str, Decimal]],
                    colors: Mapping[str, str], label: str) -> str:
    """One column per label (e.g. each day), stacked by key: spend per team over the month."""
    width, height, left, top, plot_h = 900, 320, 60, 20, Decimal(240)
    peak = max((sum(s.values(), Decimal(0)) for s in stacks.values()), default=Decimal(0)) or Decimal(1)
    step = Decimal(width - left - 10) / max(len(columns), 1)
    body = [_text(left - 6, top + 4, usd(peak), "end"), _text(left - 6, top + int(plot_h), "$0", "end")]
    for i, column in enumerate(columns):
        y = Decimal(top) + plot_h
        for key, value in stacks.get(column, {}).items():
            h = plot_h * value / peak
            y -= h
            if h > 0:
                body.append(_rect((Decimal(left) + step * i + 1, y, step - 2, h), colors[key],
                                  f"{column} {key}: {usd(value)}"))
        if i % 5 == 0 or i == len(columns) - 1:
            body.append(_text(Decimal(left) + step * i + step / 2, top + int(plot_h) + 16, column, "middle"))
    return _svg(width, height, label, body + legend(colors, height - 24))


@dataclass(frozen=True)
class Bar:
    """One horizontal bar of a row: its value, colour and what it means."""

    value: Decimal
    color: str
    name: str


def _extent(bars: Sequence[Bar], *, stacked: bool) -> Decimal:
    """How far a row's bars reach: their sum when stacked, the longest when side by side."""
    values = [b.value for b in bars]
    return sum(values, Decimal(0)) if stacked else max(values, default=Decimal(0))


def bar_rows(rows: Sequence[tuple[str, Sequence[Bar], str]], label: str, *, stacked: bool) -> str:
    """Horizontal bars per row, stacked (proprietary + self-hosted) or side by side (reference vs GPU),
    with a note at the end of each row (the row's total or its savings)."""
    width, left, row_h = 900, 140, 36
    height = 20 + row_h * len(rows) + 30
    peak = max((_extent(bars, stacked=stacked) for _k, bars, _n in rows), default=Decimal(0)) or Decimal(1)
    scale = Decimal(width - left - 200) / peak
    body: list[str] = []
    for i, (key, bars, note) in enumerate(rows):
        y, x = Decimal(10 + row_h * i), Decimal(left)
        body.append(_text(left - 8, int(y) + 18, key, "end"))
        thickness = Decimal(24) if stacked else Decimal(11)
        for j, bar in enumerate(bars):
            w = bar.value * scale
            top = y if stacked else y + (thickness + 2) * j
            if w > 0:
                body.append(_rect((x, top, w, thickness), bar.color, f"{key} {bar.name}: {usd(bar.value)}"))
            x = x + w if stacked else x
        end = Decimal(left) + scale * _extent(bars, stacked=stacked)
        body.append(_text(px(end + 8), int(y) + 18, note))
    names = {b.name: b.color for _k, bars, _n in rows for b in bars}
    return _svg(width, height, label, body + legend(names, height - 22))
