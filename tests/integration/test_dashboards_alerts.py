"""The provisioned alert rules (dashboards/provisioning/alerting/aimeter.yaml): every query stands alone (no
dashboard variable, no $__conditionalAll) and runs on the real engine over tests/integration/dashboards_seed.py."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from aimeter.grafana.build import DASHBOARDS_DIR, DATASOURCE_FILE
from aimeter.grafana.macros import MACROS, QueryContext, expand
from tests.integration.dashboards_seed import SINCE, UNTIL, seed

pytestmark = pytest.mark.integration
ALERTS_FILE = DASHBOARDS_DIR / "provisioning" / "alerting" / "aimeter.yaml"
PROVISIONED = yaml.safe_load(ALERTS_FILE.read_text(encoding="utf-8"))
RULES = {r["uid"]: r for g in PROVISIONED["groups"] for r in g["rules"]}
DATASOURCE_UID = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))["datasources"][0]["uid"]


@pytest.fixture(scope="module")
def store(metering_store):
    seed(metering_store)
    return metering_store


def query(uid: str) -> dict:
    return next(d for d in RULES[uid]["data"] if d["datasourceUid"] == DATASOURCE_UID)


def at(now: datetime, uid: str) -> QueryContext:
    """What Grafana sends for the rule evaluated at ``now``: its relativeTimeRange back from now; no variables."""
    window = query(uid)["relativeTimeRange"]
    return QueryContext(now - timedelta(seconds=window["from"]), now - timedelta(seconds=window["to"]),
                        timedelta(minutes=1))


def run(client, uid: str, ctx: QueryContext) -> list[tuple]:
    sql = expand(query(uid)["model"]["rawSql"], ctx)
    assert "$" not in sql, sql
    return client.query(sql).result_rows


def test_the_signals_are_there():
    assert set(RULES) == {"aimeter-spend-spike", "aimeter-requests-without-cost", "aimeter-pipeline-lag"}
    assert {g["folder"] for g in PROVISIONED["groups"]} == {"ai-meter"}


@pytest.mark.parametrize("uid", RULES)
def test_each_rule_is_well_formed_and_its_query_stands_alone(uid):
    rule = RULES[uid]
    refs = {d["refId"]: d for d in rule["data"]}
    assert rule["condition"] in refs
    assert refs[rule["condition"]]["model"]["type"] == "threshold"
    source = query(uid)
    assert source["model"]["editorType"] == "sql"
    assert source["model"]["format"] == 1  # a table: each row one alert instance, string columns its labels
    sql = source["model"]["rawSql"]
    assert "$__conditionalAll" not in sql, "exists only in a dashboard: the rule would fail"
    assert not re.search(r"\$\{?(?!__)\w", sql), "dashboard variables do not exist in an alert rule"
    assert set(re.findall(r"\$__(\w+)", sql)) <= set(MACROS), "only the plugin's backend macros"
    assert rule["execErrState"] == "Error"  # a broken query is an alert, never silence


def test_every_query_runs_on_the_engine(store):
    for uid in RULES:
        rows = run(store, uid, at(UNTIL - timedelta(milliseconds=1), uid))
        assert rows, uid
        assert all(isinstance(r[-1], int | float) for r in rows), (uid, rows)  # one number per instance, last


def test_spend_spike_fires_on_a_burst_and_not_on_a_quiet_hour(store):
    burst = SINCE.replace(day=3, hour=9, minute=30)  # E1, $4.375, at 09:00; the week before: one $0.15 request
    (ratio,), = run(store, "aimeter-spend-spike", at(burst, "aimeter-spend-spike"))
    threshold = RULES["aimeter-spend-spike"]["data"][-1]["model"]["conditions"][0]["evaluator"]["params"][0]
    assert ratio > threshold
    assert ratio == pytest.approx(4.375 / 0.01)  # the baseline is floored at 1 cent an hour
    quiet = UNTIL - timedelta(milliseconds=1)  # E6 ($0.75) alone: under 1 USD
    assert run(store, "aimeter-spend-spike", at(quiet, "aimeter-spend-spike")) == [(0.0,)]


def test_unpriced_and_unmetered_each_get_a_row_even_when_zero(store):
    month = QueryContext(SINCE, UNTIL - timedelta(milliseconds=1), timedelta(minutes=1))
    assert run(store, "aimeter-requests-without-cost", month) == [("unmetered", 0), ("unpriced", 3)]
    hour = at(SINCE.replace(day=3, hour=10, minute=30), "aimeter-requests-without-cost")  # E10 at 10:05
    assert run(store, "aimeter-requests-without-cost", hour) == [("unmetered", 0), ("unpriced", 1)]


def test_pipeline_lag_is_the_slowest_request_of_the_window(store):
    window = QueryContext(SINCE.replace(day=3, hour=9), SINCE.replace(day=3, hour=11), timedelta(1))
    assert run(store, "aimeter-pipeline-lag", window) == [(2.5,)]
    empty = at(SINCE - timedelta(days=17), "aimeter-pipeline-lag")
    assert run(store, "aimeter-pipeline-lag", empty) == [(0,)]


def test_compose_provisions_the_rules():
    compose = yaml.safe_load((Path(DASHBOARDS_DIR).parent / "docker-compose.yml").read_text(encoding="utf-8"))
    assert "./dashboards/provisioning/alerting:/etc/grafana/provisioning/alerting:ro" in \
        compose["services"]["grafana"]["volumes"]
