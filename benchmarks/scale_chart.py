"""Draws scale.svg from scale.json (``make bench-scale``): per size, the month chargeback and the slowest 90-day
spend panel, raw FINAL against the hourly rollups, on a log axis. Plain SVG: no plotting library needed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

COLORS = {"raw FINAL": "#c0392b", "rollups": "#1f5fa8"}
WIDTH, HEIGHT, LEFT, TOP, BOTTOM = 760, 360, 70, 40, 70


def _title(name: str) -> str:
    return name.split(": ", 1)[-1]


def series(sizes: list[dict]) -> list[tuple[str, str, float]]:
    """(group label, series, seconds) bars."""
    bars = []
    for r in sizes:
        label = f"{r['events'] / 1e6:g}M"
        bars += [(f"{label} chargeback", "raw FINAL", r["chargeback_raw_s"]),
                 (f"{label} chargeback", "rollups", r["chargeback_rollup_s"])]
        if r["panels_raw_s"]:  # (not measured in a time-boxed run)
            raw_titles = {_title(raw) for raw in r["panels_raw_s"]}
            bars += [(f"{label} slowest panel", "raw FINAL", max(r["panels_raw_s"].values())),
                     (f"{label} slowest panel", "rollups", max(v for k, v in r["panels_rollup_s"].items()
                                                               if _title(k) in raw_titles))]
    return bars


def svg(sizes: list[dict]) -> str:
    bars = series(sizes)
    groups = list(dict.fromkeys(g for g, _s, _v in bars))
    lo, hi = 0.01, max(10.0, max(v for _g, _s, v in bars) * 1.5)
    plot_h = HEIGHT - TOP - BOTTOM
    y = lambda v: TOP + plot_h * (1 - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))  # noqa: E731
    slot = (WIDTH - LEFT - 20) / len(groups)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
           'font-size="11">', f'<text x="{LEFT}" y="20" font-size="14">Month chargeback and slowest 90-day spend '
           'panel: raw FINAL vs hourly rollups (seconds, log scale)</text>']
    for tick in (0.01, 0.1, 1, 10, 100):
        if tick <= hi:
            out.append(f'<line x1="{LEFT}" x2="{WIDTH - 20}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
                       f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g} s</text>')
    for i, group in enumerate(groups):
        for j, name in enumerate(COLORS):
            value = next(v for g, s, v in bars if g == group and s == name)
            x = LEFT + i * slot + 8 + j * (slot - 16) / 2
            w = (slot - 16) / 2 - 2
            out.append(f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{w:.1f}" height="{TOP + plot_h - y(value):.1f}" '
                       f'fill="{COLORS[name]}"><title>{group} {name}: {value:.3f} s</title></rect>'
                       f'<text x="{x + w / 2:.1f}" y="{y(value) - 3:.1f}" text-anchor="middle">{value:.2f}</text>')
        out.append(f'<text x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                   f'{group}</text>')
    for j, (name, color) in enumerate(COLORS.items()):
        out.append(f'<rect x="{LEFT + j * 110}" y="{HEIGHT - 28}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{LEFT + j * 110 + 16}" y="{HEIGHT - 18}">{name}</text>')
    return "\n".join([*out, "</svg>"]) + "\n"


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(svg(data["sizes"]))
