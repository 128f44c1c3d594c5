"""Chargeback and spend SQL shared by ``aimeter chargeback`` and the Grafana dashboards (pure).

Finance and the dashboards must show the same numbers, so there is one builder and two ways to
fill in the time window and the filters:

* :func:`bound_window`: ``{since:…}``/``{until:…}`` query parameters over ``[since, until)``, for
  the CLI (values are bound by ClickHouse, never spliced into the text);
* the dashboards' window (aimeter/reports/panels.py): the ClickHouse datasource plugin's millisecond macros
  (``$__timeFilter_ms``, ``$__fromTime_ms``, ``$__toTime_ms``); a Grafana range ends on the last
  millisecond of the period, so for ``DateTime64(3)`` columns it selects exactly the same rows.

The arithmetic is that of ``spend_query`` (below): a UNION ALL of the priced ledger
(``usage_costs FINAL``) and the self-hosted GPU hours (``gpu_cost_allocation``, idle included), then
one aggregation. Marginal ``cost_usd`` stays NULL when every request was unpriced (never a silent 0);
fully loaded = proprietary marginal + allocated GPU hours; savings = reference - allocated GPU hours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aimeter.reports.rollup import Span, allocation, rollup_table
from aimeter.reports.terms import NO_COST, NOT_PRICED, ZERO

SPEND_DIMENSIONS = ("team", "project", "model", "backend", "deployment", "provider", "user")
WINDOW = "started_at >= {since:DateTime64(3, 'UTC')} AND started_at < {until:DateTime64(3, 'UTC')}"
ALLOCATION = "gpu_cost_allocation(since = {since:DateTime64(3, 'UTC')}, until = {until:DateTime64(3, 'UTC')})"

CHARGEBACK_DIMENSIONS = ("team", "project")
# What a clean_only query fails with when some whole hour of its window is not rolled up (see Window).
NOT_ROLLED_UP = "NOT_ROLLED_UP: an hour of the window is not rolled up yet; run the query with clean_only off"
# A rollup row's marginal cost: NULL when none of its requests was priced, as sum() over raw rows says.
ROLLED_COST = f"if(priced_requests > 0, cost_usd, {NO_COST})"
# Output column -> (value in a usage_costs row, in a gpu_cost_allocation row, in a usage_rollup row).
PARTS: dict[str, tuple[str, str, str]] = {
    "requests": ("toUInt64(1)", "toUInt64(0)", "requests"),
    "input_tokens": ("input_tokens", "toUInt64(0)", "input_tokens"),
    "cache_read_tokens": ("cache_read_input_tokens", "toUInt64(0)", "cache_read_input_tokens"),
    "cache_write_tokens": ("cache_creation_input_tokens", "toUInt64(0)", "cache_creation_input_tokens"),
    "output_tokens": ("output_tokens", "toUInt64(0)", "output_tokens"),
    "reasoning_tokens": ("reasoning_output_tokens", "toUInt64(0)", "reasoning_output_tokens"),
    "cost_usd": ("cost_usd", NO_COST, ROLLED_COST),
    "proprietary_usd": (f"if(deployment = 'self_hosted', {ZERO}, ifNull(cost_usd, {ZERO}))", ZERO, "proprietary_usd"),
    "gpu_usd": (ZERO, "cost_usd", "gpu_usd"),
    "reference_usd": (f"if(deployment = 'self_hosted', ifNull(reference_cost_usd, {ZERO}), {ZERO})", ZERO,
                      "reference_usd"),
    "unpriced": (f"toUInt64(pricing_status IN {NOT_PRICED})", "toUInt64(0)", "unpriced_requests"),
}
# What the outer SELECT reports, in order; every money column is Decimal(38, 12).
MEASURES: dict[str, str] = {
    "requests": "sum(p_requests)",
    "input_tokens": "sum(p_input_tokens)",
    "cache_read_tokens": "sum(p_cache_read_tokens)",
    "cache_write_tokens": "sum(p_cache_write_tokens)",
    "output_tokens": "sum(p_output_tokens)",
    "reasoning_tokens": "sum(p_reasoning_tokens)",
    "cost_usd": "sum(p_cost_usd)",
    "loaded_cost_usd": "sum(p_proprietary_usd) + sum(p_gpu_usd)",
    "proprietary_cost_usd": "sum(p_proprietary_usd)",
    "self_hosted_cost_usd": "sum(p_gpu_usd)",
    "reference_cost_usd": "sum(p_reference_usd)",
    "savings_usd": "sum(p_reference_usd) - sum(p_gpu_usd)",
    "unpriced_requests": "sum(p_unpriced)",
}
# `aimeter spend`'s columns (older names kept for its readers) beside the chargeback's MEASURES.
SPEND_MEASURES: dict[str, str] = {
    "requests": MEASURES["requests"], "input_tokens": MEASURES["input_tokens"],
    "cached_input_tokens": MEASURES["cache_read_tokens"], "output_tokens": MEASURES["output_tokens"],
    "cost_usd": MEASURES["cost_usd"], "loaded_cost_usd": MEASURES["loaded_cost_usd"],
    "reference_cost_usd": MEASURES["reference_cost_usd"], "savings_usd": MEASURES["savings_usd"],
    "unpriced_requests": MEASURES["unpriced_requests"],
}
MONEY = ("cost_usd", "loaded_cost_usd", "proprietary_cost_usd", "self_hosted_cost_usd", "reference_cost_usd",
         "savings_usd")


@dataclass(frozen=True)
class Window:
    """How a query selects its period: a row filter on a time column, and the bounds for the GPU view.
    ``rollups`` off reads every row raw with FINAL (what the rollups are compared against)."""

    where: Callable[[str], str]
    since: str
    until: str
    params: Mapping[str, Any] = field(default_factory=dict)
    rollups: bool = True
    partial_head: bool = True  # whether ``since`` may fall inside an hour (else no raw GPU head part is read)
    # The caller expects every whole hour of the window to be rolled up: no raw GPU tail is planned (the GPU view
    # costs ~0.15 s CPU to plan even when empty), and the query fails with NOT_ROLLED_UP where an hour is not, so
    # the caller reruns it without (reports/clean_first.py). Never for a window ending inside an hour.
    clean_only: bool = False

    @property
    def allocation(self) -> str:
        return allocation(self.since, self.until)

    def span(self, ok: str = "1") -> Span:
        return Span(self.since, self.until, ok)


def bound_window(since: datetime, until: datetime) -> Window:
    """[since, until) with bound parameters: what the CLI runs."""
    since_p, until_p = "{since:DateTime64(3, 'UTC')}", "{until:DateTime64(3, 'UTC')}"
    aligned = since == since.replace(minute=0, second=0, microsecond=0)
    return Window(lambda col: f"{col} >= {since_p} AND {col} < {until_p}", since_p, until_p,
                  {"since": since, "until": until}, partial_head=not aligned)


@dataclass(frozen=True)
class Filters:
    """Conditions on attribution dimensions, built the same way for every source from each source's column
    (``usage_events`` keeps the requested and the served model apart, so its model is an expression)."""

    dimensions: tuple[str, ...] = ()
    condition: Callable[[str, str], str] = lambda _dimension, _column: "1 = 1"  # (dimension, column) -> SQL

    def where(self, columns: Mapping[str, str]) -> list[str]:
        return [self.condition(d, columns[d]) for d in self.dimensions]


NO_FILTERS = Filters()
FILTER_DIMENSIONS = ("team", "project", "backend", "model", "deployment")
COSTS_COLUMNS = {d: d for d in FILTER_DIMENSIONS}
EVENTS_COLUMNS = {**COSTS_COLUMNS, "model": "if(model_served != '', model_served, model_requested)"}


def _and(conditions: Sequence[str]) -> str:
    return "\n      AND ".join(conditions) or "1 = 1"


def union_parts(key: str, bucket: Callable[[str], str], window: Window, filters: Filters,
                owner: str | None = None, *, ok: str = "1") -> str:
    """The parts (priced requests, GPU hours, and with rollups the clean hours' rollup rows) with
    ``p_``-prefixed outputs: a ClickHouse alias shadows the column of the same name in every other expression
    of the SELECT, so ``NULL AS cost_usd`` would blank ``cost_usd``. ``owner``, when given, is grouped before
    the key (``p_owner``). ``ok``: SQL that is false where hourly rows cannot serve (see rollup.Span)."""
    head = "" if owner is None else f",\n        {owner} AS p_owner"

    def select(index: int, source: str, time_col: str, where: list[str]) -> str:
        cells = "".join(f",\n        {exprs[index]} AS p_{name}" for name, exprs in PARTS.items())
        return (f"SELECT\n        {bucket(time_col)} AS p_bucket{head},\n        {key} AS p_key{cells}\n"
                f"    FROM {source}\n    WHERE {_and(where)}")

    costs = filters.where(COSTS_COLUMNS)
    if not window.rollups:
        priced = select(0, "usage_costs FINAL", "started_at", [window.where("started_at"), *costs])
        return f"    {priced}\n    UNION ALL\n    {select(1, window.allocation, 'hour', costs)}"
    span = window.span(ok)
    # The GPU view costs ~0.12 s to plan even when empty: its partial first hour is read only if there is one, and
    # its dirty tail only if the caller does not expect the rollups to cover every whole hour (else the guard
    # fails the query while the tail is not empty, which it is not when the tail starts at the window's end).
    if not window.clean_only:  # head and tail in one view (the head's hour is before the first whole hour: raw)
        gpu = [select(1, span.raw_allocation(window.partial_head), "hour", [span.raw("hour"), *costs])]
    else:
        gpu = [select(1, allocation(window.since, span.head_end), "hour", costs)] if window.partial_head else []
    # A scalar subquery: the engine evaluates it while planning, so it fails even when no rollup row is read.
    guard = [f"(SELECT throwIf({span.tail_from} < {window.until}, '{NOT_ROLLED_UP}')) = 0"]
    parts = [
        select(0, "usage_costs FINAL", "started_at", [window.where("started_at"), span.raw("started_at"), *costs]),
        *gpu,
        # usage_rollup_teams (no user or key columns: 4-6x fewer rows) unless the key, owner or a filter needs one.
        select(2, rollup_table(key, owner or "", *costs), "hour",
               [span.rolled(), "source IN ('cost', 'gpu')", *costs, *(guard if window.clean_only else [])]),
    ]
    return "    " + "\n    UNION ALL\n    ".join(parts)


@dataclass(frozen=True)
class Grouping:
    """What rows an aggregate has: an optional time bucket, owner and key, each with its output name. The owner
    (e.g. the team of a project line) makes one line per (owner, key): no team's spend lands on another's."""

    key: str | None = None
    key_name: str = "key"
    bucket: Callable[[str], str] | None = None
    bucket_name: str = "bucket"
    having: str | None = None
    order: str | None = None
    owner: str | None = None
    owner_name: str = "team"
    rollup_ok: str = "1"  # false where hourly rows cannot serve (a bucket shorter than an hour)


def aggregate_query(measures: Sequence[str], window: Window, filters: Filters = NO_FILTERS,
                    grouping: Grouping = Grouping()) -> tuple[str, dict[str, Any]]:
    """Any of :data:`MEASURES` over the window, optionally per bucket and key. Every spend figure of the
    CLI, the HTML report and the dashboards is one of these, so they cannot disagree."""
    g = grouping
    parts = (("p_bucket", g.bucket_name, g.bucket), ("p_owner", g.owner_name, g.owner), ("p_key", g.key_name, g.key))
    names = [name for _src, name, used in parts if used is not None]
    sources = [src for src, _name, used in parts if used is not None]
    columns = "".join(f"{src} AS {name},\n    " for src, name in zip(sources, names, strict=True))
    union = union_parts(g.key or "''", g.bucket or (lambda _col: "0"), window, filters, g.owner, ok=g.rollup_ok)
    sql = (f"SELECT\n    {columns}{measures_sql(measures)}\nFROM (\n{union}\n)"
           + (f"\nGROUP BY {', '.join(names)}" if names else "")
           + (f"\nHAVING {g.having}" if g.having else "")
           + (f"\nORDER BY {g.order}" if g.order else ""))
    return sql, dict(window.params)


def measures_sql(names: Sequence[str]) -> str:
    known = {**MEASURES, **SPEND_MEASURES}
    return ",\n    ".join(f"{known[n]} AS {n}" for n in names)


def spend_query(by: str, since: datetime, until: datetime, *, corrections: bool = False) -> tuple[str, dict[str, Any]]:
    """``aimeter spend``: the chargeback's arithmetic over [since, until) per ``by`` (any spend dimension), with
    the same window, so spend, chargeback and the dashboards agree to the last digit for the same period.

    * ``cost_usd``: marginal, what the pricer charged each request (NULL when none was priced).
    * ``loaded_cost_usd``: proprietary cost plus the self-hosted GPU time allocated by token share
      (``gpu_cost_allocation``; capacity nobody used shows up under ``idle``).
    * ``savings_usd``: what the self-hosted tokens would have cost on each backend's reference model,
      minus their fully loaded GPU cost (so idle capacity counts against the savings).
    * ``unpriced_requests``: requests with no cost, unpriced or unmetered (never a silent $0).
    * with ``corrections``: ``as_charged_cost_usd`` (rating version 0) and ``correction_usd``.
    """
    if by not in SPEND_DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(SPEND_DIMENSIONS)}, got {by!r}")
    sql, params = aggregate_query(list(SPEND_MEASURES), bound_window(since, until), grouping=Grouping(
        key=by, key_name=by, order=f"loaded_cost_usd DESC, {by}"))
    if not corrections:
        return sql, params
    window = bound_window(since, until).where("started_at")
    charged = (f"SELECT p_key, sum(p_charged) AS as_charged_cost_usd FROM (SELECT {by} AS p_key, "  # noqa: S608
               f"argMin(tuple(cost_usd), rating_version).1 AS p_charged FROM usage_cost_versions FINAL "
               f"WHERE {window} GROUP BY event_id, {by}) GROUP BY p_key")
    wrapped = f"""SELECT s.*, c.as_charged_cost_usd AS as_charged_cost_usd,
    ifNull(s.cost_usd, {ZERO}) - ifNull(c.as_charged_cost_usd, {ZERO}) AS correction_usd
FROM ({sql}) AS s
LEFT JOIN ({charged}) AS c ON s.{by} = c.p_key
ORDER BY loaded_cost_usd DESC, {by}"""  # noqa: S608 - `by` is checked above; values are bound parameters
    return wrapped, params


def month_start(col: str) -> str:
    return f"toStartOfMonth({col})"


def chargeback_query(key: str, window: Window, filters: Filters = NO_FILTERS, key_name: str = "key", *,
                     owner: str | None = None, owner_name: str = "team") -> tuple[str, dict[str, Any]]:
    """One row per month and ``key`` (a column name, validated by the caller), or per month, ``owner`` and
    ``key`` (by project: per team and project): token classes, marginal and fully loaded cost, the
    proprietary / self-hosted split, reference, savings and unpriced requests. Idle GPU capacity is its own
    row (key ``idle``)."""
    lead = key_name if owner is None else f"{owner_name}, {key_name}"
    return aggregate_query(list(MEASURES), window, filters, Grouping(
        key=key, key_name=key_name, bucket=month_start, bucket_name="month", owner=owner, owner_name=owner_name,
        order=f"month, loaded_cost_usd DESC, {lead}"))


def chargeback_total_query(window: Window, filters: Filters = NO_FILTERS,
                           measures: Sequence[str] = tuple(MEASURES)) -> tuple[str, dict[str, Any]]:
    """The grand total over the whole window: one row."""
    return aggregate_query(measures, window, filters)


def daily_query(key: str, window: Window, filters: Filters = NO_FILTERS) -> tuple[str, dict[str, Any]]:
    """Fully loaded spend per day and ``key``: the 'spend over the month' chart of the HTML report (a project
    is keyed ``team/project``, as its line is)."""
    expr = "if(team = 'idle' AND project = 'idle', 'idle', concat(team, '/', project))" if key == "project" else key
    return aggregate_query(["loaded_cost_usd"], window, filters, Grouping(
        key=expr, bucket=lambda col: f"toDate({col})", bucket_name="day", order="day, key"))


def owner_of(by: str) -> str | None:
    """What a chargeback line is grouped by before ``by``: a project line belongs to one team."""
    return "team" if by == "project" else None


def checked_dimension(by: str) -> str:
    if by not in CHARGEBACK_DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(CHARGEBACK_DIMENSIONS)}, got {by!r}")
    return by
