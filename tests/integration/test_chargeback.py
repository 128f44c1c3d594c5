"""`aimeter chargeback`: hand-computed lines, the same totals as the Chargeback dashboard, `aimeter spend` and
the README's finance SQL, every output format, and the command itself while the pricer owns the store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from aimeter.grafana.build import load_dashboards
from aimeter.grafana.macros import ALL, QueryContext, Variable, expand
from aimeter.local.stack import settings_env
from aimeter.reports.chargeback import as_text, fetch, month_window, totals
from aimeter.reports.sql import MEASURES, spend_query
from tests.integration.dashboards_seed import EXPECTED_BY_TEAM, EXPECTED_TOTAL, MONTH, SINCE, UNTIL, seed
from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHARGEBACK = next(d for d in load_dashboards() if d["uid"] == "aimeter-chargeback")


@pytest.fixture(scope="module")
def store(metering_store):
    seed(metering_store)
    return metering_store


def dashboard_panel(client, title: str, group_by: str) -> list[dict]:
    """A Chargeback panel for February 2026 as Grafana would run it (All everywhere)."""
    variables = {v["name"]: Variable(v["name"], ALL if v.get("includeAll") else group_by)
                 for v in CHARGEBACK["templating"]["list"]}
    ctx = QueryContext(SINCE, UNTIL - timedelta(milliseconds=1), timedelta(days=1), variables)
    sql = next(p for p in CHARGEBACK["panels"] if p["title"] == title)["targets"][0]["rawSql"]
    result = client.query(expand(sql, ctx))
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


def test_lines_and_total_are_the_hand_computed_ones(store):
    report = fetch(store, MONTH, "team")
    assert {r["team"]: {m: r[m] for m in MEASURES} for r in report.rows} == EXPECTED_BY_TEAM
    assert [r["team"] for r in report.rows] == ["alpha", "idle", "beta"]  # most expensive first
    assert report.total == EXPECTED_TOTAL


@pytest.mark.parametrize("by", ["team", "project"])
def test_chargeback_equals_the_chargeback_dashboard(store, by):
    report = fetch(store, MONTH, by)
    table = dashboard_panel(store, "Chargeback by month", by)
    # A project line is grouped by its team too, so one team cannot put its spend on another team's project.
    owner = (lambda r: {"team": r["owner_team"]}) if by == "project" else (lambda _r: {})
    assert [{**owner(r), by: r[by], **{m: r[m] for m in MEASURES}} for r in table] == report.rows
    assert {r["period"] for r in table} == {"whole month"}
    [total] = dashboard_panel(store, "Total for the period", by)
    assert total == {k: report.total[k] for k in total}
    assert report.total["loaded_cost_usd"] == EXPECTED_TOTAL["loaded_cost_usd"]


def test_chargeback_equals_aimeter_spend(store):
    """The older `aimeter spend` report and the chargeback share their arithmetic."""
    sql, params = spend_query("team", *month_window(MONTH))
    result = store.query(sql, parameters=params)
    spend = {r[0]: dict(zip(result.column_names, r, strict=True)) for r in result.result_rows}
    for line in fetch(store, MONTH, "team").rows:
        mine = spend[line["team"]]
        for name in ("requests", "input_tokens", "output_tokens", "cost_usd", "loaded_cost_usd",
                     "reference_cost_usd", "savings_usd", "unpriced_requests"):
            assert mine[name] == line[name], (line["team"], name)


def test_the_readme_finance_sql_gives_the_same_lines(store):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```sql\n(.*?)```", readme, re.DOTALL) if "-- Chargeback by team" in b)
    sql = block.replace("2026-11-01", "2026-02-01").replace("2026-12-01", "2026-03-01").strip().rstrip(";")
    result = store.query(sql)
    lines = [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]
    assert lines == fetch(store, MONTH, "team").rows


def test_csv_and_json_keep_exact_decimals(store):
    report = fetch(store, MONTH, "project")
    csv_lines = as_text(report, "csv").splitlines()
    assert csv_lines[0].startswith("month,team,project,requests,input_tokens,cache_read_tokens")
    assert csv_lines[-1].startswith("2026-02,TOTAL,,10,5103010,500000,0,2851510,0,8.575000000000,13.075000000000")
    assert "E-" not in "".join(csv_lines)
    body = json.loads(as_text(report, "json"))
    assert (body["month"], body["by"], body["currency"]) == ("2026-02", "project", "USD")
    assert body["total"]["loaded_cost_usd"] == "13.075000000000"
    assert next(r for r in body["rows"] if r["project"] == "idle")["cost_usd"] is None


def test_an_all_unpriced_month_has_no_marginal_total():
    line = {m: (None if m == "cost_usd" else 0) for m in MEASURES}
    assert totals([line, line])["cost_usd"] is None  # unknown, not $0
    assert totals([line, {**line, "cost_usd": Decimal("0.5")}])["cost_usd"] == Decimal("0.5")


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "Nov 2026", "2026-11-01"])
def test_bad_months_are_refused(month):
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_window(month)


def test_december_ends_at_new_year():
    assert [d.isoformat() for d in month_window("2026-12")] == ["2026-12-01T00:00:00+00:00",
                                                                "2027-01-01T00:00:00+00:00"]


def test_the_command_reads_the_store_the_pricer_holds(stack, clickhouse, tmp_path):
    """Embedded mode: the pricer process owns chDB; the command reads through its query endpoint."""
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key_for(stack, "support", "helpdesk-bot"),
                           max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "fake: prompt=1000000 completion=100000"}])
    raw.parse()
    [(started,)] = wait_for_row(clickhouse, "SELECT started_at FROM usage_costs FINAL WHERE event_id = {id:UUID}",
                                {"id": raw.headers["x-aimeter-event-id"]})
    month = f"{started:%Y-%m}"
    env = {**settings_env(stack.settings), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "aimeter", "chargeback", "--month", month, "--by", "team",
                          "--format", "json"], capture_output=True, text=True, env=env, timeout=60, check=True)
    body = json.loads(out.stdout)
    support = next(r for r in body["rows"] if r["team"] == "support")
    assert support["requests"] >= 1
    assert Decimal(support["cost_usd"]) >= Decimal("3.5")
    money = ("cost_usd", "loaded_cost_usd", "savings_usd")
    assert {m: Decimal(body["total"][m]) for m in money} == {
        m: sum((Decimal(r[m]) for r in body["rows"] if r[m] is not None), Decimal(0)) for m in money}

    html = tmp_path / "chargeback.html"
    subprocess.run([sys.executable, "-m", "aimeter", "chargeback", "--month", month, "--format", "html",
                    "--out", str(html)], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert html.read_text(encoding="utf-8").count("<svg") == 3
