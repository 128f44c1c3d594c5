"""Chargeback and spend SQL shared by ``aimeter chargeback`` and the Grafana dashboards (pure).

Finance and the dashboards must show the same numbers, so there is one builder and two ways to
fill in the time window and the filters:

* :func:`bound_window`: ``{since:…}``/``{until:…}`` query parameters over ``[since, until)``, for
  the CLI (values are bound by ClickHouse, never spliced into the text);
* the dashboards' window (aimeter/grafana/sql.py): the ClickHouse datasource plugin's millisecond macros
  (``$__timeFilter_ms``, ``$__fromTime_ms``, ``$__toTime_ms``); a Grafana range ends on the last
  millisecond of the period, so for ``DateTime64(3)`` columns it selects exactly the same rows.

The arithmetic is that of ``spend_query`` (store/queries.py): a UNION ALL of the priced ledger
(``usage_costs FINAL``) and the self-hosted GPU hours (``gpu_cost_allocation``, idle included), then
one aggregation. Marginal ``cost_usd`` stays NULL when every request was unpriced (never a silent 0);
fully loaded = proprietary marginal + allocated GPU hours; savings = reference - allocated GPU hours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aimeter.store.queries import NO_COST, ZERO

CHARGEBACK_DIMENSIONS = ("team", "project")
# Output column -> (value in a usage_costs row, value in a gpu_cost_allocation row).
PARTS: dict[str, tuple[str, str]] = {
    "requests": ("toUInt64(1)", "toUInt64(0)"),
    "input_tokens": ("input_tokens", "toUInt64(0)"),
    "cache_read_tokens": ("cache_read_input_tokens", "toUInt64(0)"),
    "cache_write_tokens": ("cache_creation_input_tokens", "toUInt64(0)"),
    "output_tokens": ("output_tokens", "toUInt64(0)"),
    "reasoning_tokens": ("reasoning_output_tokens", "toUInt64(0)"),
    "cost_usd": ("cost_usd", NO_COST),
    "proprietary_usd": (f"if(deployment = 'self_hosted', {ZERO}, ifNull(cost_usd, {ZERO}))", ZERO),
    "gpu_usd": (ZERO, "cost_usd"),
    "reference_usd": (f"if(deployment = 'self_hosted', ifNull(reference_cost_usd, {ZERO}), {ZERO})", ZERO),
    "unpriced": ("toUInt64(pricing_status = 'unpriced')", "toUInt64(0)"),
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
MONEY = ("cost_usd", "loaded_cost_usd", "proprietary_cost_usd", "self_hosted_cost_usd", "reference_cost_usd",
         "savings_usd")


@dataclass(frozen=True)
class Window:
    """How a query selects its period: a row filter on a time column, and the bounds for the GPU view."""

    where: Callable[[str], str]
    since: str
    until: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def allocation(self) -> str:
        return f"gpu_cost_allocation(since = {self.since}, until = {self.until})"


def bound_window(since: datetime, until: datetime) -> Window:
    """[since, until) with bound parameters: what the CLI runs."""
    since_p, until_p = "{since:DateTime64(3, 'UTC')}", "{until:DateTime64(3, 'UTC')}"
    return Window(lambda col: f"{col} >= {since_p} AND {col} < {until_p}", since_p, until_p,
                  {"since": since, "until": until})


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


def union_parts(key: str, bucket: Callable[[str], str], window: Window, filters: Filters) -> str:
    """The two halves (priced requests, GPU hours) with ``p_``-prefixed outputs; see store/queries.py
    for why the prefix (a ClickHouse alias shadows the column of the same name)."""
    def select(index: int, source: str, time_col: str, where: list[str]) -> str:
        cells = "".join(f",\n        {exprs[index]} AS p_{name}" for name, exprs in PARTS.items())
        return (f"SELECT\n        {bucket(time_col)} AS p_bucket,\n        {key} AS p_key{cells}\n"
                f"    FROM {source}\n    WHERE {_and(where)}")

    costs = filters.where(COSTS_COLUMNS)
    priced = select(0, "usage_costs FINAL", "started_at", [window.where("started_at"), *costs])
    gpu = select(1, window.allocation, "hour", costs)
    return f"    {priced}\n    UNION ALL\n    {gpu}"


@dataclass(frozen=True)
class Grouping:
    """What rows an aggregate has: an optional time bucket and key, each with its output name."""

    key: str | None = None
    key_name: str = "key"
    bucket: Callable[[str], str] | None = None
    bucket_name: str = "bucket"
    having: str | None = None
    order: str | None = None


def aggregate_query(measures: Sequence[str], window: Window, filters: Filters = NO_FILTERS,
                    grouping: Grouping = Grouping()) -> tuple[str, dict[str, Any]]:
    """Any of :data:`MEASURES` over the window, optionally per bucket and key. Every spend figure of the
    CLI, the HTML report and the dashboards is one of these, so they cannot disagree."""
    g = grouping
    names = [n for n, used in ((g.bucket_name, g.bucket), (g.key_name, g.key)) if used is not None]
    sources = ["p_bucket"] * (g.bucket is not None) + ["p_key"] * (g.key is not None)
    columns = "".join(f"{src} AS {name},\n    " for src, name in zip(sources, names, strict=True))
    union = union_parts(g.key or "''", g.bucket or (lambda _col: "0"), window, filters)
    sql = (f"SELECT\n    {columns}{measures_sql(measures)}\nFROM (\n{union}\n)"
           + (f"\nGROUP BY {', '.join(names)}" if names else "")
           + (f"\nHAVING {g.having}" if g.having else "")
           + (f"\nORDER BY {g.order}" if g.order else ""))
    return sql, dict(window.params)


def measures_sql(names: Sequence[str]) -> str:
    return ",\n    ".join(f"{MEASURES[n]} AS {n}" for n in names)


def month_start(col: str) -> str:
    return f"toStartOfMonth({col})"


def chargeback_query(key: str, window: Window, filters: Filters = NO_FILTERS,
                     key_name: str = "key") -> tuple[str, dict[str, Any]]:
    """One row per month and ``key`` (a column name, validated by the caller): token classes, marginal and
    fully loaded cost, the proprietary / self-hosted split, reference, savings and unpriced requests.
    Idle GPU capacity is its own row (key ``idle``)."""
    return aggregate_query(list(MEASURES), window, filters, Grouping(
        key=key, key_name=key_name, bucket=month_start, bucket_name="month",
        order=f"month, loaded_cost_usd DESC, {key_name}"))


def chargeback_total_query(window: Window, filters: Filters = NO_FILTERS,
                           measures: Sequence[str] = tuple(MEASURES)) -> tuple[str, dict[str, Any]]:
    """The grand total over the whole window: one row."""
    return aggregate_query(measures, window, filters)


def daily_query(key: str, window: Window, filters: Filters = NO_FILTERS) -> tuple[str, dict[str, Any]]:
    """Fully loaded spend per day and ``key``: the 'spend over the month' chart of the HTML report."""
    return aggregate_query(["loaded_cost_usd"], window, filters, Grouping(
        key=key, bucket=lambda col: f"toDate({col})", bucket_name="day", order="day, key"))


def checked_dimension(by: str) -> str:
    if by not in CHARGEBACK_DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(CHARGEBACK_DIMENSIONS)}, got {by!r}")
    return by
