"""Finance-grade numbers (issue 14) on the real engine (chDB): GPU cost as dated history that never bills
before its declaration or after now, one answer per question (spend == chargeback == the dashboards' SQL),
never a silent $0, project lines per team, and machine formats that are machine formats."""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aimeter import cli
from aimeter.config import parse_config
from aimeter.events import UsageEvent
from aimeter.grafana.build import load_dashboards
from aimeter.grafana.macros import ALL, QueryContext, Variable, expand
from aimeter.local.demo import self_hosted_notes
from aimeter.pricer.gpu_periods import sync_gpu_periods
from aimeter.pricer.pricebook import UNMETERED, PriceBook
from aimeter.reports.chargeback import as_text, fetch
from aimeter.reports.queries import self_hosted_use_query
from aimeter.reports.reconcile import RECONCILE_SQL
from aimeter.reports.sql import MEASURES, spend_query
from aimeter.reprice import run_command
from tests.integration.chdb_fixture import ingest

pytestmark = pytest.mark.integration
DASHBOARDS = {d["uid"]: d for d in load_dashboards()}
CONFIG_TEXT = """
backends:
  {name}:
    kind: openai_compatible
    base_url: "http://127.0.0.1:9/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {{gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: "{price}", sustained_tokens_per_second: 1000}}
    reference_model: {{provider: openai, model: gpt-4o}}
  openai-fin: {{kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}}
models:
  llama-{name}: {{backend: {name}}}
  gpt-4o: {{backend: openai-fin}}
"""


def config(name: str, price: str = "3.60"):
    return parse_config(CONFIG_TEXT.format(name=name, price=price))


def call(at: datetime, team: str, *, backend: str = "openai-fin", project: str = "", inp: int = 0, out: int = 0,
         source: str = "reported") -> UsageEvent:
    hosted = backend != "openai-fin"
    return UsageEvent(event_id=uuid.uuid4(), started_at=at, ended_at=at, api="openai.chat", backend=backend,
                      provider="vllm" if hosted else "openai", deployment="self_hosted" if hosted else "proprietary",
                      model_requested=f"llama-{backend}" if hosted else "gpt-4o", status="ok", http_status=200,
                      usage_source=source, usage={"input_tokens": inp, "output_tokens": out},
                      attribution={"team": team, "project": project})


def spend(client, by: str, since: datetime, until: datetime) -> dict[str, dict]:
    result = client.query(*spend_query(by, since, until))
    return {r[0]: dict(zip(result.column_names, r, strict=True)) for r in result.result_rows}


def panel(client, uid: str, title: str, since: datetime, until: datetime, **chosen: str) -> list[dict]:
    """A panel's SQL as Grafana runs it over [since, until] (the plugin's range end is inclusive)."""
    dashboard = DASHBOARDS[uid]
    variables = {v["name"]: Variable(v["name"], chosen.get(v["name"], ALL if v.get("includeAll")
                                                             else v["current"]["value"]))
                 for v in dashboard["templating"]["list"]}
    sql = next(p for p in dashboard["panels"] if p["title"] == title)["targets"][0]["rawSql"]
    result = client.query(expand(sql, QueryContext(since, until, timedelta(days=1), variables)))
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


def test_a_month_before_any_gpu_period_shows_no_gpu_cost(metering_store):
    """`--month 2019-01`, years before the install, billed $3,720 of idle GPU: the period was stored from 1970."""
    declared = datetime(2026, 11, 15, 10, tzinfo=UTC)
    sync_gpu_periods(metering_store, config("gpu-early"), now=declared)
    for month in ("2019-01", "2026-10"):
        report = fetch(metering_store, month, "team")
        assert report.total["self_hosted_cost_usd"] == 0, month
        assert "idle" not in {r["team"] for r in report.rows}
    november = spend(metering_store, "backend", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    # Billed from the declaration on: 15 days 14 hours at $3.60/h.
    assert november["gpu-early"]["loaded_cost_usd"] == (15 * 24 + 14) * Decimal("3.60")


def test_the_current_month_stops_at_now_and_spend_chargeback_and_dashboards_agree(metering_store):
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    declared = max(month_start, now - timedelta(minutes=200))
    sync_gpu_periods(metering_store, config("gpu-mtd"), now=declared)
    used = declared + (now - declared) / 2
    book = PriceBook(config("gpu-mtd"))
    ingest(metering_store, [call(used, "mtd-a", backend="gpu-mtd", inp=1000, out=200),
                            call(used, "mtd-b", inp=10_000, out=1000)], book)

    report = fetch(metering_store, f"{now:%Y-%m}", "team", now=now)
    assert (report.to_date, report.until) == (True, now)
    assert "month to date" in report.period
    assert "month to date" in as_text(report, "html")
    # No hour after now: the backend's GPU time is exactly now - declared at $3.60/h ($0.000001 per ms).
    ms = int((now - declared) / timedelta(milliseconds=1))
    by_backend = spend(metering_store, "backend", month_start, now)
    assert by_backend["gpu-mtd"]["loaded_cost_usd"] == ms * Decimal("0.000001")

    # One answer: `aimeter spend`, `aimeter chargeback` and the dashboards over [month start, now].
    by_team = spend(metering_store, "team", month_start, now)
    assert {r["team"] for r in report.rows} == set(by_team)
    pairs = {"requests": "requests", "input_tokens": "input_tokens", "cache_read_tokens": "cached_input_tokens",
             "output_tokens": "output_tokens", "cost_usd": "cost_usd", "loaded_cost_usd": "loaded_cost_usd",
             "reference_cost_usd": "reference_cost_usd", "savings_usd": "savings_usd",
             "unpriced_requests": "unpriced_requests"}
    for line in report.rows:
        assert {m: line[m] for m in pairs} == {m: by_team[line["team"]][s] for m, s in pairs.items()}, line["team"]
    table = panel(metering_store, "aimeter-chargeback", "Chargeback by month", month_start, now)
    assert [{"team": r["team"], **{m: r[m] for m in MEASURES}} for r in table] == report.rows
    assert {r["period"] for r in table} == {"month to date"}
    [total] = panel(metering_store, "aimeter-chargeback", "Total for the period", month_start, now)
    assert total == {k: report.total[k] for k in total}
    [spend_total] = panel(metering_store, "aimeter-spend", "Total spend", month_start, now)
    assert (spend_total["loaded_cost_usd"], spend_total["cost_usd"]) == (
        report.total["loaded_cost_usd"], report.total["cost_usd"])


def test_an_undated_price_edit_never_changes_an_already_reported_hour(metering_store, caplog):
    declared = datetime(2023, 6, 1, tzinfo=UTC)
    sync_gpu_periods(metering_store, config("gpu-edit"), now=declared)
    first, second = (declared, declared + timedelta(hours=1)), (declared + timedelta(hours=1),
                                                                 declared + timedelta(hours=2))
    assert spend(metering_store, "backend", *first)["gpu-edit"]["loaded_cost_usd"] == Decimal("3.60")
    with caplog.at_level(logging.INFO, logger="aimeter.pricer.gpu_periods"):
        assert sync_gpu_periods(metering_store, config("gpu-edit", "7.20"),
                                now=declared + timedelta(hours=1, minutes=30)) == 2
    assert "price changed without dates ($3.6/h -> $7.2/h)" in caplog.text
    assert "closed at 2023-06-01 01:30 UTC" in caplog.text
    assert spend(metering_store, "backend", *first)["gpu-edit"]["loaded_cost_usd"] == Decimal("3.60")
    assert spend(metering_store, "backend", *second)["gpu-edit"]["loaded_cost_usd"] == Decimal("5.40")  # 1.80 + 3.60
    # Retire the backend after its first hour, so its idle GPU stays out of the other tests' months.
    retired = CONFIG_TEXT.format(name="gpu-edit", price="3.60").replace(
        "sustained_tokens_per_second: 1000}", "sustained_tokens_per_second: 1000, effective_to: 2023-06-01T01:00:00Z}")
    sync_gpu_periods(metering_store, parse_config(retired), now=declared + timedelta(hours=2), correct_since=declared)
    assert "gpu-edit" not in spend(metering_store, "backend", *second)


def test_an_unmetered_answer_is_counted_like_unpriced_everywhere(metering_store):
    since, until = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
    at = datetime(2024, 5, 7, 9, 30, tzinfo=UTC)
    ingest(metering_store, [call(at, "unmetered-team", source="none"),
                            call(at, "metered-team", inp=1_000_000, out=100_000)], PriceBook(config("gpu-x")))
    [(status, cost)] = metering_store.query(
        "SELECT pricing_status, cost_usd FROM usage_costs FINAL WHERE team = 'unmetered-team'").result_rows
    assert (status, cost) == (UNMETERED, None)  # not a priced $0
    teams = spend(metering_store, "team", since, until)
    assert (teams["unmetered-team"]["unpriced_requests"], teams["unmetered-team"]["cost_usd"]) == (1, None)
    report = fetch(metering_store, "2024-05", "team")
    assert report.total["unpriced_requests"] == 1
    assert report.total["cost_usd"] == Decimal("3.5")
    assert panel(metering_store, "aimeter-spend", "Unpriced requests", since, until) == [{"unpriced_requests": 1}]
    [hour] = metering_store.query(RECONCILE_SQL, parameters={"since": since, "until": until}).result_rows
    assert hour == ("2024-05-07T09:00Z", 2, 2, 0, 1)  # events, cost rows, unpriced, unmetered


def test_chargeback_by_project_keeps_each_teams_spend_on_its_own_line(metering_store):
    """Two teams naming the same project used to share one line: one team's spend on the other's project."""
    at = datetime(2024, 6, 3, 12, tzinfo=UTC)
    ingest(metering_store, [call(at, "team-a", project="shared", inp=1_000_000),
                            call(at, "team-b", project="shared", inp=2_000_000)], PriceBook(config("gpu-x")))
    report = fetch(metering_store, "2024-06", "project")
    lines = {(r["team"], r["project"]): r["cost_usd"] for r in report.rows if r["project"] == "shared"}
    assert lines == {("team-a", "shared"): Decimal("2.5"), ("team-b", "shared"): Decimal("5")}
    table = panel(metering_store, "aimeter-chargeback", "Chargeback by month", datetime(2024, 6, 1, tzinfo=UTC),
                  datetime(2024, 7, 1, tzinfo=UTC) - timedelta(milliseconds=1), group_by="project")
    assert {(r["owner_team"], r["project"]): r["cost_usd"] for r in table if r["project"] == "shared"} == lines


@pytest.fixture
def cli_on_store(metering_store, monkeypatch):
    """`aimeter` in-process, its reports reading the session's engine (as through the pricer's endpoint)."""
    monkeypatch.setattr("aimeter.store.client.report_client", lambda *_args: metering_store)
    return cli.main


def test_spend_machine_formats_print_data_only(metering_store, cli_on_store, capsys):
    at = datetime(2024, 8, 2, 12, tzinfo=UTC)
    ingest(metering_store, [call(at, "=cmd|' /C calc'!A0", inp=1000), call(at, "fmt-team", source="estimated")],
           PriceBook(config("gpu-x")))
    args = ["spend", "--since", "2024-08-01", "--until", "2024-09-01", "--by", "team"]
    assert cli_on_store([*args, "--format", "json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)  # data only: the title went to stderr
    assert "spend by team" in out.err
    assert {r["team"] for r in rows} == {"=cmd|' /C calc'!A0", "fmt-team"}
    zero = next(r for r in rows if r["team"] == "fmt-team")
    assert zero["cost_usd"] == "0.000000000000"  # never "0E-12"
    assert cli_on_store([*args, "--format", "csv"]) == 0
    out = capsys.readouterr()
    table = list(csv.reader(io.StringIO(out.out)))
    assert table[0][:2] == ["team", "requests"]
    assert {r[0] for r in table[1:]} == {"'=cmd|' /C calc'!A0", "fmt-team"}  # a formula is neutralised
    assert "E-" not in out.out


@pytest.mark.parametrize("args", [["spend", "--since", "10000000d"], ["spend", "--until", "99999-01-01"],
                                  ["chargeback", "--month", "99999-01"], ["chargeback", "--month", "9999-12"]])
def test_an_out_of_range_date_is_a_one_line_error(args, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"aimeter {args[0]}: "), err


def test_the_demo_explains_fully_loaded_against_marginal(metering_store):
    """The demo's self-hosted numbers read sensibly: loaded = marginal + idle within capacity; beyond it, the
    printed reason says why loaded is below marginal."""
    declared = datetime(2023, 7, 1, tzinfo=UTC)
    dated = CONFIG_TEXT.format(name="gpu-demo", price="3.60").replace(
        "sustained_tokens_per_second: 1000}", "sustained_tokens_per_second: 1000, effective_to: 2023-07-01T01:00:00Z}")
    sync_gpu_periods(metering_store, parse_config(dated), now=declared)
    ingest(metering_store, [call(declared + timedelta(minutes=10), "demo", backend="gpu-demo", inp=1_500_000,
                                 out=300_000)], PriceBook(parse_config(dated)))
    rows = metering_store.query(*self_hosted_use_query(declared, declared + timedelta(hours=1))).result_rows
    [line] = [n for n in self_hosted_notes(rows) if n.startswith("self-hosted gpu-demo")]
    assert "1,800,000 tokens used of a 3,600,000-token capacity (50%)" in line
    assert "Fully loaded $3.600000 = the marginal $1.800000 charged per request plus the idle capacity" in line
    [over] = self_hosted_notes([("b", Decimal("3.6"), Decimal(3_600_000), 4_500_000, Decimal(0), Decimal("4.5"))])
    assert "(125%)" in over
    assert "below the marginal $4.500000 because the requests exceeded the declared sustained_tokens_per_second" in over


def test_reprice_applies_a_dated_gpu_correction_visibly_and_keeps_the_as_charged_version(metering_store, chdb_path):
    """A past GPU price reaches reports only through `aimeter reprice`, which says what it moved."""
    declared, day = datetime(2023, 9, 1, tzinfo=UTC), timedelta(days=1)
    dated = CONFIG_TEXT.replace("sustained_tokens_per_second: 1000}",
                                "sustained_tokens_per_second: 1000, effective_to: 2023-09-02T00:00:00Z}")
    sync_gpu_periods(metering_store, parse_config(dated.format(name="gpu-rp", price="3.60")), now=declared)
    corrected = parse_config(dated.format(name="gpu-rp", price="7.20"))
    out, err = io.StringIO(), io.StringIO()
    assert run_command(f"chdb://{chdb_path}", lambda: metering_store, corrected, PriceBook(corrected),
                       since=declared, until=declared + day, dry_run=False, out=out, err=err) == 0
    assert ("GPU cost periods corrected: 1 period versions written; fully loaded GPU cost of the window before "
            "$86.400000, after $172.800000, correction $86.400000") in out.getvalue()
    assert spend(metering_store, "backend", declared, declared + day)["gpu-rp"]["loaded_cost_usd"] == Decimal("172.8")
    versions = metering_store.query("SELECT usd_per_hour FROM gpu_cost_period_versions FINAL WHERE backend = 'gpu-rp'"
                                     " ORDER BY version").result_rows
    assert [v[0] for v in versions] == [Decimal("3.60"), Decimal("7.20")]  # the as-charged version stays
