"""The "Gateway health" dashboard (Prometheus): every query names a metric the gateway or the pricer really exports
(read from their expositions, parsed by prometheus_client's parser), on the one Prometheus datasource uid."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aimeter.gateway.metrics import PUBLISHER_HELP, GatewayMeter, exposition, registry_for
from aimeter.grafana.build import load_dashboards
from aimeter.grafana.prometheus import PROM_UID, gateway_health
from aimeter.pricer.metrics import PricerMetrics

DASHBOARD = next(d for d in load_dashboards() if d["uid"] == gateway_health().uid)
NAME = re.compile(r"\b(aimeter_[a-z_]+)")
PROMQL_KEYWORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "or", "vector", "le"}


def exported_names() -> set[str]:
    """Sample names (with _total/_bucket/_sum/_count) of a gateway and a pricer that served one request each."""
    meter = GatewayMeter()
    meter.request("openai.chat", "openai", "gpt-4o", "t", "ok", 0.2, 0.19, 0.05, 10, 2, 0)
    meter.reject("openai.chat", 401)
    gateway = exposition(registry_for(meter, lambda: dict.fromkeys(PUBLISHER_HELP, 0)))
    pricer = PricerMetrics()
    event = SimpleNamespace(attribution=SimpleNamespace(team="t"), model_served="gpt-4o", model_requested="")
    pricer.priced([event, event], [((1,), None, SimpleNamespace(status="priced")),
                                   ((None,), None, SimpleNamespace(status="unpriced"))])
    pricer.batch(2)
    pricer.insert_seconds.observe(0.1)
    text = gateway.decode() + pricer.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_query_reads_an_exported_metric_on_the_prometheus_datasource() -> None:
    names = exported_names()
    used = set()
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": PROM_UID}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == PROM_UID
            used |= set(NAME.findall(target["expr"]))
    assert used, "no metric named"
    assert used <= names, f"not exported: {sorted(used - names)}"


def test_rates_follow_the_time_picker_and_panels_do_not_overlap() -> None:
    exprs = [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]
    assert all("[$__rate_interval]" in e or "[$__range]" in e or "rate(" not in e for e in exprs)
    assert not any(re.search(r"\[\d+[smhd]\]", e) for e in exprs), "a hard-coded range ignores the time picker"
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in DASHBOARD["panels"]
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells))
    assert DASHBOARD["time"]["from"].startswith("now")


@pytest.mark.parametrize("title", ["Events dropped", "Kafka down", "Journal full", "Dead letters", "Not priced"])
def test_alarms_turn_red_on_one(title: str) -> None:
    panel = next(p for p in DASHBOARD["panels"] if p["title"] == title)
    assert panel["type"] == "stat"
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "red", "value": 1}
    assert panel["targets"][0]["instant"] is True
