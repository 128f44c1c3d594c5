"""Prometheus metrics of a running stack: the gateway's and the pricer's /metrics, scraped with the bearer token
and parsed with prometheus_client's parser (issue 20)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.integration.metrics_scrape import scrape, value
from tests.support.stack import key_for

pytestmark = pytest.mark.integration
TEAM, PROJECT = "metrics-probe", "helpdesk-bot"  # a team no other test of the shared stack uses


def test_gateway_and_pricer_metrics_count_requests_tokens_latency_and_usd(stack) -> None:
    token_file = stack.settings.resolved_metrics_token_file
    gateway_url = f"{stack.gateway_url}/metrics"
    pricer_url = f"http://127.0.0.1:{stack.settings.pricer_metrics_port}/metrics"
    before = scrape(gateway_url, token_file)
    cost_before = value(scrape(pricer_url, token_file), "aimeter_pricer_cost_usd_total", team=TEAM,
                        model="gpt-4o-mini")  # the same series as read after: the stack is shared by other tests
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key_for(stack, TEAM, PROJECT), max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "fake: prompt=1000 completion=100"}])
    with client.chat.completions.create(model="gpt-4o-mini", stream=True, messages=[
            {"role": "user", "content": "fake: prompt=1000 completion=100"}]) as stream:
        for _ in stream:
            pass
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])

    after = scrape(gateway_url, token_file)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"api": "openai.chat", "model": "gpt-4o-mini", "status": "ok", "team": TEAM}
    assert grew("aimeter_gateway_requests_total", **ok) == 4
    assert grew("aimeter_gateway_rejected_total", api="openai.chat", code="404") == 1
    assert grew("aimeter_gateway_tokens_total", team=TEAM, model="gpt-4o-mini", type="input") == 4000
    assert grew("aimeter_gateway_tokens_total", team=TEAM, model="gpt-4o-mini", type="output") == 400
    for part in ("upstream", "added"):
        assert grew("aimeter_gateway_latency_seconds_count", api="openai.chat", backend="openai", part=part) == 4
        assert grew("aimeter_gateway_ttft_seconds_count", api="openai.chat", backend="openai", part=part) == 1
    assert grew("aimeter_gateway_latency_seconds_bucket", api="openai.chat", part="added", le="+Inf") == 4
    assert grew("aimeter_events_emitted_total") >= 4  # the publisher's counters, on the same page
    assert value(after, "aimeter_spool_bytes") == 0

    # The pricer: its own loopback port, the same token; USD is the pricer's (the gateway has no prices).
    expected = 4 * (1000 * 0.15 + 100 * 0.60) / 1e6  # gpt-4o-mini list price, per 1M tokens
    deadline, cost = time.monotonic() + 60, 0.0
    while time.monotonic() < deadline:
        pricer = scrape(pricer_url, token_file)
        cost = value(pricer, "aimeter_pricer_cost_usd_total", team=TEAM, model="gpt-4o-mini") - cost_before
        if cost >= expected * 0.999:
            break
        time.sleep(0.5)
    assert cost == pytest.approx(expected)
    assert value(pricer, "aimeter_pricer_events_inserted_total") >= 4
    assert value(pricer, "aimeter_pricer_batch_events_count") >= 1
    assert value(pricer, "aimeter_pricer_insert_seconds_count") >= 1
    assert value(pricer, "aimeter_pricer_consumer_lag_messages") >= -1
    names = {s.name for s in pricer}
    assert {"aimeter_pricer_dead_lettered_total", "aimeter_pricer_batch_failures_total"} <= names


@pytest.mark.parametrize("where", ["gateway", "pricer"])
def test_metrics_need_the_token_and_refuse_browsers(stack, where: str) -> None:
    url = f"{stack.gateway_url}/metrics" if where == "gateway" else \
        f"http://127.0.0.1:{stack.settings.pricer_metrics_port}/metrics"
    token = stack.settings.resolved_metrics_token_file.read_text().strip()
    cases = [({}, 401), ({"Authorization": "Bearer wrong"}, 401),
             ({"Authorization": f"Bearer {token}", "Origin": "http://evil.example"}, 403)]
    if where == "pricer":
        cases.append(({"Authorization": f"Bearer {token}", "Host": "evil.example"}, 403))
    for headers, status in cases:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
        assert caught.value.code == status, headers
