"""Every dashboard panel's SQL, expanded as Grafana and the ClickHouse plugin expand it, run on the real
engine (chDB) over the known February 2026 usage of tests/integration/dashboards_seed.py."""

from __future__ import annotations

import os
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from aimeter.alerts.budget_table import sync_budget_windows
from aimeter.budgets.model import Budget, Enforcement, Period, ScopeKind
from aimeter.grafana.build import load_dashboards
from aimeter.grafana.macros import ALL, QueryContext, Variable, expand
from tests.integration.dashboards_seed import EXPECTED_BY_TEAM, SINCE, UNTIL, seed
from tests.integration.provider_books_seed import seed_books
from tests.support.dashboards import effective_unit

pytestmark = pytest.mark.integration
D = Decimal
DASHBOARDS = {d["uid"]: d for d in load_dashboards() if d["uid"] != "aimeter-gateway-health"}  # (Prometheus)
MONTH_END = UNTIL - timedelta(milliseconds=1)  # Grafana's "whole month" ends on its last millisecond
OPS_FROM = datetime(2026, 2, 3, 9, tzinfo=SINCE.tzinfo)
OPS_TO = OPS_FROM + timedelta(hours=2) - timedelta(milliseconds=1)
H9, H10 = datetime(2026, 2, 3, 9), datetime(2026, 2, 3, 10)  # noqa: DTZ001 - ClickHouse hands UTC back naive


@pytest.fixture(scope="module")
def store(metering_store):
    seed(metering_store)
    seed_books(metering_store)
    sync_budget_windows(metering_store, BUDGETS, SINCE)  # as the pricer writes them from the config
    return metering_store


def context(dashboard: dict, time_from: datetime = SINCE, time_to: datetime = MONTH_END,
            interval: timedelta = timedelta(days=1), **chosen: Any) -> QueryContext:
    """The dashboard's variables at their defaults (All; group_by = team) unless ``chosen``."""
    variables = {}
    for v in dashboard["templating"]["list"]:
        default = ALL if v.get("includeAll") else v["current"]["value"]
        variables[v["name"]] = Variable(v["name"], chosen.get(v["name"], default))
    return QueryContext(time_from, time_to, interval, variables)


def panel_sql(uid: str, title: str) -> str:
    return next(p for p in DASHBOARDS[uid]["panels"] if p["title"] == title)["targets"][0]["rawSql"]


def run(client, uid: str, title: str, **kwargs: Any) -> list[tuple]:
    sql = expand(panel_sql(uid, title), context(DASHBOARDS[uid], **kwargs))
    assert "$" not in sql.replace("$$", ""), sql  # every macro and variable was expanded
    return client.query(sql).result_rows


def feb(day: int) -> datetime:
    return datetime(2026, 2, day)  # noqa: DTZ001 - as ClickHouse returns it


SPEND = "aimeter-spend"
MARCH_1 = UNTIL.replace(tzinfo=None)  # as ClickHouse returns it
BUDGETS = [Budget("alpha-monthly", ScopeKind.TEAM, "alpha", D(10), Period.MONTH, "UTC", Enforcement.SOFT),
           Budget("k-b1-cap", ScopeKind.KEY, "k-b1", D(1), Period.MONTH),
           Budget("proj-c-daily", ScopeKind.PROJECT, "proj-c", D(1), Period.DAY, "Europe/Paris", Enforcement.SOFT)]
EXPECTED: dict[tuple[str, str], list[tuple]] = {
    (SPEND, "Total spend"): [(D("13.075"), D("8.575"))],
    (SPEND, "Proprietary vs self-hosted"): [("proprietary", D("5.875")), ("self_hosted", D("7.20"))],
    (SPEND, "Cache-read savings"): [(D("0.625"),)],  # E1: 500k cached at $2.50 per 1M, minus the $0.625 paid
    (SPEND, "Unpriced requests"): [(3,)],
    (SPEND, "Spend over time by team"): [
        (feb(3), "alpha", D("4.375")), (feb(3), "beta", D(0)), (feb(10), "alpha", D("1.80")),
        (feb(10), "beta", D("0.90")), (feb(10), "idle", D("4.50")), (feb(15), "beta", D("0.75")),
        (feb(20), "beta", D(0)), (feb(28), "alpha", D("0.75"))],
    (SPEND, "Spend over time by model"): [
        (feb(3), "gpt-4o", D("4.375")), (feb(3), "mystery-dash", D(0)), (feb(10), "idle", D("4.50")),
        (feb(10), "llama-dash", D("2.70")), (feb(15), "gpt-4o-mini", D("0.75")), (feb(20), "mystery-dash", D(0)),
        (feb(28), "gpt-4o-mini", D("0.75"))],
    (SPEND, "Spend over time by backend"): [
        (feb(3), "openai-dash", D("4.375")), (feb(10), "gpu-dash", D("7.20")), (feb(15), "openai-dash", D("0.75")),
        (feb(20), "openai-dash", D(0)), (feb(28), "openai-dash", D("0.75"))],
    # E1 $4.375 / 1.25M tokens; the GPU's $2.70 / 2.7M; E2 + E6 $1.50 / 4M. Unpriced requests are left out.
    (SPEND, "$ per 1M tokens by model"): [("gpt-4o", D("3.5")), ("llama-dash", D(1)), ("gpt-4o-mini", D("0.375"))],
    (SPEND, "Top virtual keys"): [("k-a1", "alpha", 4, D("6.175"), 1), ("k-b1", "beta", 5, D("1.65"), 2),
                                  ("k-a2", "alpha", 1, D("0.75"), 0)],
    (SPEND, "Top users"): [("u1", "alpha", 5, D("6.925"), 1), ("u2", "beta", 5, D("1.65"), 2)],
    (SPEND, "Self-hosted savings vs reference"): [("gpu-dash", D("11.25"), D("7.20"), D("4.05"))],
    (SPEND, "Unpriced requests by model"): [("mystery-dash", "openai-dash", 3)],
    # tests/integration/provider_books_seed.py: the newest run per day, cost rows only, the month only.
    (SPEND, "Metered vs billed per provider per day"): [
        (SINCE.date().replace(day=3), "anthropic", D("0.10"), D("0.10"), D(0), 0),
        (SINCE.date().replace(day=3), "openai", D("4.375"), D("4.50"), D("0.125"), 1),
        (SINCE.date().replace(day=15), "openai", D("0.75"), D("0.75"), D(0), 0)],
    # The budgets' windows containing the range's end (Feb 28 23:59:59.999 UTC): k-b1's month (1.65 of $1), proj-c's
    # Paris day from Feb 28 23:00 UTC (E6 at 23:59:59.5), alpha's month: E1 4.375 + E3 1.80 + E6 0.75 (E9 unpriced).
    (SPEND, "Budget use per scope"): [
        ("k-b1-cap", "key", "k-b1", "hard", "month", D(1), D("1.65"), 165.0, D("-0.65"), 2, MARCH_1),
        ("proj-c-daily", "project", "proj-c", "soft", "day", D(1), D("0.75"), 75.0, D("0.25"), 0,
         MARCH_1 + timedelta(hours=23)),  # Feb 28 23:59:59.999 UTC is already March 1st in Paris
        ("alpha-monthly", "team", "alpha", "soft", "month", D(10), D("6.925"), 69.2, D("3.075"), 1,
         MARCH_1)],
    ("aimeter-chargeback", "Total for the period"): [(10, D("8.575"), D("13.075"), D("7.20"), D("4.05"), 3)],
    ("aimeter-chargeback", "Chargeback by month"): [
        ("whole month", date(2026, 2, 1), team, team, *EXPECTED_BY_TEAM[team].values())
        for team in ("alpha", "idle", "beta")],
    ("aimeter-chargeback", "Idle self-hosted capacity"): [(date(2026, 2, 1), "gpu-dash", D("4.50"), D("7.20"))],
}
OPS = "aimeter-gateway-ops"
# Feb 3 09:00-11:00, hourly: 09h E1 (ok, 2 s), E8 (upstream_error), E9 (stream, ok, 1 s, first token at 300 ms);
# 10h E10 (stream, ok, 3 s, first token at 700 ms), E11 (timeout). Quantiles are quantilesBFloat16 (mergeable hourly
# states, reports/panels_ops.py): a value of the bucket, not interpolated, cut to 8 significant bits (3000 -> 2992).
OPS_EXPECTED: dict[str, list[tuple]] = {
    "Requests/s": [(H9, pytest.approx(3 / 3600)), (H10, pytest.approx(2 / 3600))],
    "Error rate by status": [(H9, "upstream_error", pytest.approx(1 / 3)), (H10, "timeout", 0.5)],
    "Latency p50 / p95 / p99": [(H9, 1000, 2000, 2000), (H10, 2992, 2992, 2992)],
    "Time to first token (streams)": [(H9, 300, 300, 300), (H10, 700, 700, 700)],
    "Tokens/s": [(H9, pytest.approx(1_001_000 / 3600), pytest.approx(250_500 / 3600)),
                 (H10, pytest.approx(2000 / 3600), pytest.approx(1000 / 3600))],
    # ended_at -> ingested_at: 1.5, 0.5, 2.5 s in the 9h bucket; 1.0 and 0.5 s in the 10h one.
    "Pipeline lag": [(H9, 1.5, 2.5, 2.5), (H10, 0.5, 1.0, 1.0)],
    "Attempts by status": [("ok", 200, 3), ("timeout", 504, 1), ("upstream_error", 500, 1)],
}


def test_every_panel_has_an_expectation():
    titles = {(uid, p["title"]) for uid, d in DASHBOARDS.items() for p in d["panels"]}
    assert titles == set(EXPECTED) | {(OPS, t) for t in OPS_EXPECTED}


@pytest.mark.parametrize(("uid", "title"), list(EXPECTED), ids=lambda x: x)
def test_spend_and_chargeback_panels_over_the_month(store, uid, title):
    assert run(store, uid, title) == EXPECTED[uid, title]


@pytest.mark.parametrize("title", list(OPS_EXPECTED))
def test_gateway_operations_panels(store, title):
    rows = run(store, OPS, title, time_from=OPS_FROM, time_to=OPS_TO, interval=timedelta(hours=1))
    assert rows == OPS_EXPECTED[title]


@pytest.mark.parametrize(("chosen", "loaded", "marginal"), [
    ({"team": ("alpha",)}, D("6.925"), D("6.925")),  # idle GPU hours are nobody's team
    ({"team": ("alpha", "beta")}, D("8.575"), D("8.575")),
    ({"team": ("idle",)}, D("4.50"), None),
    ({"deployment": ("self_hosted",)}, D("7.20"), D("2.70")),
    ({"model": ("llama-dash",)}, D("2.70"), D("2.70")),
    ({"backend": ("openai-dash",), "project": ("proj-c",)}, D("0.75"), D("0.75")),
])
def test_the_variables_filter_every_part(store, chosen, loaded, marginal):
    assert run(store, SPEND, "Total spend", **chosen) == [(loaded, marginal)]


@pytest.mark.parametrize(("uid", "title"), list(EXPECTED), ids=lambda x: x)
def test_a_selected_value_with_a_quote_filters_instead_of_breaking_the_panel(store, uid, title):
    """${var:singlequote} escapes the quote; the plugin's default formatting would end the string literal."""
    assert run(store, uid, title, model=("o'brien",), team=("alpha", "it's")) is not None


def test_a_quoted_value_matches_exactly(store):
    assert run(store, SPEND, "Total spend", model=("gpt-4o", "it's")) == [(D("4.375"), D("4.375"))]


@pytest.mark.parametrize(("uid", "title"), [k for k in EXPECTED if k[1] != "Chargeback by month"], ids=lambda x: x)
def test_every_numeric_column_has_its_own_unit(store, uid, title):
    """Money columns (named *_usd) show dollars, every other number (requests, tokens) does not."""
    panel = next(p for p in DASHBOARDS[uid]["panels"] if p["title"] == title)
    result = store.query(expand(panel_sql(uid, title), context(DASHBOARDS[uid])))
    numeric = [n for n, t in zip(result.column_names, result.column_types, strict=True)
               if re.search(r"Int|Float|Decimal", t.name)]
    for column in numeric:
        unit = effective_unit(panel, column)
        assert (unit == "currencyUSD") == ("usd" in column), (column, unit)


def test_the_engine_is_the_line_the_run_asked_for(store):
    """scripts/test runs these tests a second time on chDB 4.0 (ClickHouse 25.8, the Docker stack's server line)."""
    line = os.environ.get("AIMETER_TEST_CLICKHOUSE_LINE")
    version = store.command("SELECT version()")
    assert line is None or version.startswith(line + "."), (line, version)


def test_without_the_analyzer_25_8_cannot_read_the_allocation_view(store):
    """Why the stack's reader profile pins enable_analyzer = 1 (docker/clickhouse/users.d/aimeter.xml)."""
    if not store.command("SELECT version()").startswith("25."):
        pytest.skip("from 26.x the analyzer is always on (enable_analyzer is obsolete)")
    sql = expand(panel_sql(SPEND, "Total spend"), context(DASHBOARDS[SPEND]))
    # The old analyzer fails on the GPU allocation view's parameters, whichever view the panel names first:
    # gpu_cost_allocation ("query parameter 'since'") or gpu_cost_allocation_edges, whose bounds are expressions
    # over the clean-hour snapshot ("not a constant expression").
    with pytest.raises(Exception, match=r"query parameter 'since'|is not a constant expression"):
        store.query(sql + "\nSETTINGS enable_analyzer = 0")


def test_the_chargeback_table_groups_by_the_chosen_dimension(store):
    rows = run(store, "aimeter-chargeback", "Chargeback by month", group_by="project")
    # Each project line is also grouped by its team (owner_team): a team's spend never lands on another's line.
    assert [(r[2], r[3], r[11]) for r in rows] == [("alpha", "proj-a", D("6.175")), ("idle", "idle", D("4.50")),
                                                   ("beta", "proj-b", D("1.65")), ("alpha", "proj-c", D("0.75"))]


def test_a_range_cut_mid_month_counts_only_what_it_covers(store):
    rows = run(store, SPEND, "Total spend", time_from=datetime(2026, 2, 10, 10, 40, tzinfo=SINCE.tzinfo),
               time_to=datetime(2026, 2, 15, 12, 0, 0, 1000, tzinfo=SINCE.tzinfo))
    # E4 ($0.90 marginal) and E2 ($0.75) are in range; GPU time is billed for the part of the range it covers:
    # 10:40-11:00 ($1.20: beta's 0.9M of its 1.2M tokens capacity $0.90, idle $0.30) and 11:00-12:00 ($3.60).
    assert rows == [(D("0.75") + D("1.20") + D("3.60"), D("0.90") + D("0.75"))]


def test_the_seconds_macro_would_lose_the_last_second_of_the_month(store):
    """Why money panels use $__timeFilter_ms: E6 happened at 23:59:59.500 on the last day."""
    ctx = context(DASHBOARDS[SPEND])
    count = "SELECT count() FROM usage_costs FINAL WHERE {}"
    seconds = store.command(expand(count.format("$__timeFilter(started_at)"), ctx))
    millis = store.command(expand(count.format("$__timeFilter_ms(started_at)"), ctx))
    assert (seconds, millis) == (9, 10)


@pytest.mark.parametrize(("name", "values"), [
    ("team", ["alpha", "beta", "idle"]), ("project", ["idle", "proj-a", "proj-b", "proj-c"]),
    ("backend", ["gpu-dash", "openai-dash"]), ("model", ["gpt-4o", "gpt-4o-mini", "idle", "llama-dash",
                                                         "mystery-dash"]),
])
def test_variable_choices_come_from_the_range(store, name, values):
    dashboard = DASHBOARDS[SPEND]
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == name)
    rows = store.query(expand(variable["query"]["rawSql"], context(dashboard))).result_rows
    assert [r[0] for r in rows] == values
