"""``aimeter chargeback --format html``: one self-contained file finance can send around (pure).

No script, font, stylesheet or image is loaded from anywhere: styles are inline, charts are inline
SVG (aimeter/reports/chargeback_svg.py), and a Content-Security-Policy of ``default-src 'none'`` makes any
external reference fail loudly in a browser rather than leak a request. It holds the table with its
grand total and three charts: spend per key over the month, proprietary versus self-hosted, and
self-hosted savings versus the reference models.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from decimal import Decimal
from html import escape
from typing import Any

from aimeter.reports.chargeback import Chargeback, month_window
from aimeter.reports.chargeback_svg import (
    PROPRIETARY_COLOR,
    REFERENCE_COLOR,
    SELF_HOSTED_COLOR,
    Bar,
    bar_rows,
    key_colors,
    stacked_columns,
    usd,
)
from aimeter.reports.sql import MEASURES, MONEY

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
p.note { color: #555; font-size: 13px; max-width: 900px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
tr.total td { font-weight: bold; border-top: 2px solid #222; }
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
HEADERS = {
    "requests": "requests", "input_tokens": "input tok", "cache_read_tokens": "cache read tok",
    "cache_write_tokens": "cache write tok", "output_tokens": "output tok", "reasoning_tokens": "reasoning tok",
    "cost_usd": "marginal $", "loaded_cost_usd": "fully loaded $", "proprietary_cost_usd": "paid APIs $",
    "self_hosted_cost_usd": "self-hosted $", "reference_cost_usd": "reference $", "savings_usd": "savings $",
    "unpriced_requests": "unpriced / unmetered",
}


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "—"
    if name in MONEY:
        return usd(value)
    return f"{value:,}"


def table(report: Chargeback) -> str:
    labels = report.labels
    head = "".join(f"<th>{escape(HEADERS.get(c, c))}</th>" for c in report.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(row[c]))}</td>" if c in labels
                                    else f"<td>{_cell(c, row[c])}</td>" for c in report.columns) + "</tr>"
                   for row in report.rows)
    blanks = "<td></td>" * (len(labels) - 1)
    total = f"<tr class='total'><td>TOTAL</td>{blanks}" + "".join(f"<td>{_cell(m, report.total[m])}</td>"
                                                                  for m in MEASURES) + "</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}{total}</tbody></table>"


def line_name(report: Chargeback, row: dict[str, Any]) -> str:
    """A line's name in the charts: the project's team first when the report is by project."""
    return "/".join(str(row[c]) for c in report.labels) if row[report.by] != "idle" else "idle"


def spend_over_month(report: Chargeback) -> str:
    since, _until = month_window(report.month)
    last = calendar.monthrange(since.year, since.month)[1]
    if report.to_date and report.until is not None:  # month to date: no empty columns for days still to come
        last = max(1, (report.until - since).days + (report.until.time() != since.time()))
    days = [f"{d:02d}" for d in range(1, last + 1)]
    stacks: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for day, key, loaded in report.daily:
        if loaded:
            stacks[f"{day.day:02d}"][key] = loaded
    colors = key_colors(sorted({k for _d, k, _v in report.daily}))
    return stacked_columns(days, stacks, colors, f"Fully loaded spend per {report.by} per day")


def deployment_split(report: Chargeback) -> str:
    rows = [(line_name(report, r), [Bar(r["proprietary_cost_usd"], PROPRIETARY_COLOR, "paid APIs"),
                                 Bar(r["self_hosted_cost_usd"], SELF_HOSTED_COLOR, "self-hosted (loaded)")],
             usd(r["loaded_cost_usd"])) for r in report.rows]
    return bar_rows(rows, "Proprietary versus self-hosted spend", stacked=True)


def _savings_note(value: Decimal) -> str:
    return f"saves {usd(value)}" if value >= 0 else f"costs {usd(-value)} more"


def savings(report: Chargeback) -> str:
    rows = [(line_name(report, r), [Bar(r["reference_cost_usd"], REFERENCE_COLOR, "reference (paid model)"),
                                 Bar(r["self_hosted_cost_usd"], SELF_HOSTED_COLOR, "self-hosted (loaded)")],
             _savings_note(r["savings_usd"])) for r in report.rows
            if r["reference_cost_usd"] or r["self_hosted_cost_usd"]]
    return bar_rows(rows, "Self-hosted savings versus reference", stacked=False)


def render_html(report: Chargeback) -> str:
    total = report.total
    by = " and ".join(report.labels)
    sections = [
        ("Spend per " + by + (" over the month to date" if report.to_date else " over the month"),
         spend_over_month(report)),
        ("Proprietary versus self-hosted", deployment_split(report)),
        ("Savings versus reference", savings(report)),
    ]
    charts = "".join(f"<h2>{escape(title)}</h2>{svg}" for title, svg in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>AI chargeback {escape(report.period)} by {escape(report.by)}</title>
<style>{STYLE}</style></head>
<body>
<h1>AI chargeback, {escape(report.period)}, by {escape(by)}</h1>
<p class="note">Fully loaded total {usd(total["loaded_cost_usd"])}; marginal
{usd(total["cost_usd"]) if total["cost_usd"] is not None else "—"}; self-hosted savings
{usd(total["savings_usd"])}; requests with no cost (unpriced or unmetered)
{total["unpriced_requests"]:,}. Marginal cost is what each request
was charged; fully loaded adds whole GPU hours, with capacity nobody used shown as <em>idle</em>; savings are what
self-hosted tokens would have cost on each backend's reference model, minus their GPU cost.</p>
{table(report)}
{charts}
</body></html>"""
