"""The dashboard JSON Grafana loads: current with the code, well formed, and honest about time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aimeter.grafana.build import DASHBOARDS_DIR, DATASOURCE_FILE, JSON_DIR, load_dashboards, stale, write
from aimeter.grafana.model import PLUGIN_ID
from aimeter.grafana.prometheus import gateway_health
from aimeter.reports.sql import FILTER_DIMENSIONS
from tests.support.dashboards import effective_unit

PROM_DASHBOARD = gateway_health().uid
# The ClickHouse dashboards; Gateway health (Prometheus) has its own tests in test_dashboards_prometheus.py.
DASHBOARDS = [d for d in load_dashboards() if d["uid"] != PROM_DASHBOARD]
BY_UID = {d["uid"]: d for d in DASHBOARDS}
PANELS = [(d["uid"], p) for d in DASHBOARDS for p in d["panels"]]
PROVIDER = yaml.safe_load((DASHBOARDS_DIR / "provisioning" / "dashboards" / "aimeter.yaml").read_text())["providers"][0]
DATASOURCE = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"][0]
# Grafana's variable syntaxes ($var, ${var}, ${var:fmt}, [[var]]); `$__…` are macros and built-ins.
VARIABLE_USE = re.compile(r"\$\{(\w+)(?:[.:][^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")
TIME_MACROS = ("$__timeFilter", "$__fromTime", "$__toTime", "$__dateFilter", "$__dt(", "$__timeFrom")


def queries(dashboard: dict) -> list[str]:
    """Every SQL text of a dashboard: panel targets and query variables."""
    sql = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
    return sql + [v["query"]["rawSql"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def test_committed_json_matches_the_code(tmp_path: Path):
    assert stale() == [], "run `aimeter dashboards build` and commit dashboards/json/"
    fresh = {p.name: p.read_text(encoding="utf-8") for p in write(tmp_path)}
    assert fresh == {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.json")}
    assert stale(tmp_path) == []


def test_the_four_dashboards_exist():
    assert {d["title"] for d in DASHBOARDS} == {"AI spend overview", "Chargeback", "Gateway operations"}
    assert {d["title"] for d in load_dashboards()} - {d["title"] for d in DASHBOARDS} == {"Gateway health"}


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d["uid"])
def test_panel_ids_are_unique_and_panels_do_not_overlap(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in dashboard["panels"]
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])


def test_every_datasource_reference_resolves_to_the_provisioned_datasource():
    wanted = {"type": DATASOURCE["type"], "uid": DATASOURCE["uid"]}
    assert DATASOURCE["type"] == PLUGIN_ID
    refs = [p["datasource"] for _uid, p in PANELS] + [t["datasource"] for _uid, p in PANELS for t in p["targets"]]
    refs += [v["datasource"] for d in DASHBOARDS for v in d["templating"]["list"] if v["type"] == "query"]
    assert refs
    assert all(ref == wanted for ref in refs)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d["uid"])
def test_every_variable_used_is_defined_and_every_defined_one_is_used(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    texts = queries(dashboard) + [p.get("description", "") for p in dashboard["panels"]]
    used = {next(g for g in m.groups() if g) for text in texts for m in VARIABLE_USE.finditer(text)}
    used = {name for name in used if not name.startswith("__")}
    assert used <= defined, f"undefined: {used - defined}"
    assert defined <= used, f"unused: {defined - used}"
    assert set(FILTER_DIMENSIONS) <= defined


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d["uid"])
def test_the_five_filters_offer_all(dashboard):
    filters = [v for v in dashboard["templating"]["list"] if v["name"] in FILTER_DIMENSIONS]
    assert [v["name"] for v in filters] == list(FILTER_DIMENSIONS)
    assert all(v["includeAll"] and v["multi"] and v["current"]["value"] == ["$__all"] for v in filters)


@pytest.mark.parametrize(("uid", "panel"), PANELS, ids=lambda x: x if isinstance(x, str) else x["title"])
def test_every_panel_query_honours_the_time_picker_and_the_filters(uid, panel):
    sql = panel["targets"][0]["rawSql"]
    assert any(m in sql for m in TIME_MACROS), "no time macro: the panel would ignore the time picker"
    assert not re.search(r"\d{4}-\d{2}-\d{2}|now\(|today\(|INTERVAL \d+ (DAY|HOUR|MONTH|WEEK)", sql, re.IGNORECASE)
    filters = {m.group(1) for m in re.finditer(r"\$__conditionalAll\([^$]*\$\{(\w+):singlequote\}\), \$\1\)", sql)}
    assert not re.search(r"IN \(\$\{\w+\}\)", sql), "a selected value is interpolated with ${var:singlequote}"
    assert filters >= {"backend", "deployment"}, "every panel narrows to the backend and deployment variables"
    assert uid not in BY_UID or panel["datasource"]["uid"] == DATASOURCE["uid"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d["uid"])
def test_no_hard_coded_time_range(dashboard):
    assert dashboard["time"]["from"].startswith("now")
    assert dashboard["time"]["to"].startswith("now")
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert "$__timeFilter" in v["query"]["rawSql"]
            assert v["refresh"] == 2


def test_time_series_panels_ask_for_time_series_frames():
    for _uid, panel in PANELS:
        target = panel["targets"][0]
        assert target["format"] == (0 if panel["type"] == "timeseries" else 1)
        if panel["type"] == "timeseries":
            assert re.search(r"\$__timeInterval\((\w+)\) AS time|AS time,", target["rawSql"])
            assert target["rawSql"].rstrip().endswith(("ORDER BY time", "ORDER BY time, status")) or \
                re.search(r"ORDER BY time, \w+$", target["rawSql"])


def test_provisioning_points_at_the_generated_files():
    assert PROVIDER["type"] == "file"
    assert PROVIDER["options"]["path"].endswith("/aimeter")
    assert DATASOURCE["uid"] == "aimeter-clickhouse"
    assert set(DATASOURCE["jsonData"]) >= {"host", "port", "protocol", "username"}


@pytest.mark.parametrize(("uid", "title", "counts", "money"), [
    ("aimeter-spend", "Top virtual keys", ["requests", "unpriced_requests"], ["spend_usd"]),
    ("aimeter-spend", "Top users", ["requests", "unpriced_requests"], ["spend_usd"]),
    ("aimeter-chargeback", "Total for the period", ["requests", "unpriced_requests"],
     ["loaded_cost_usd", "cost_usd", "self_hosted_cost_usd", "savings_usd"]),
    ("aimeter-chargeback", "Chargeback by month", ["requests", "input_tokens", "cache_read_tokens", "output_tokens",
                                                   "unpriced_requests"], ["cost_usd", "loaded_cost_usd"]),
])
def test_counts_are_never_shown_as_dollars(uid, title, counts, money):
    panel = next(p for p in BY_UID[uid]["panels"] if p["title"] == title)
    assert {c: effective_unit(panel, c) for c in counts} == dict.fromkeys(counts, "short")
    assert {c: effective_unit(panel, c) for c in money} == dict.fromkeys(money, "currencyUSD")


def test_the_price_per_token_bar_chart_plots_one_series():
    panel = next(p for p in BY_UID["aimeter-spend"]["panels"] if p["title"] == "$ per 1M tokens by model")
    select = panel["targets"][0]["rawSql"].split("FROM")[0]
    assert re.findall(r"AS (\w+)", select) == ["usd_per_1m_tokens"]  # no `tokens` bar on the dollar axis
