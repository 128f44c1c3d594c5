"""Gateway and pricer Prometheus metrics without a network: the hot-path counters, label bounds, the exposition
parsed by prometheus_client's parser, and who may scrape (token, no browsers)."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aimeter.gateway.metrics import MAX_VALUES, OTHER, Bounded, GatewayMeter, exposition, registry_for
from aimeter.metrics_auth import MetricsDenied, check_scrape, ensure_token
from aimeter.pricer.metrics import PricerMetrics, serve_metrics


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_meter_exposition_parses_with_cumulative_buckets_and_publisher_counters() -> None:
    meter = GatewayMeter()
    meter.request("openai.chat", "openai", "gpt-4o", "search", "ok", 0.2503, 0.25, 0.1, 100, 10, 40)
    meter.request("openai.chat", "openai", "gpt-4o", "search", "ok", 3.0, 2.9999, None, 50, 5, 0)
    meter.reject("openai.chat", 401)
    text = exposition(registry_for(meter, lambda: {"aimeter_events_emitted_total": 2, "aimeter_spool_bytes": 0}))
    got = samples(text)
    req = (("api", "openai.chat"), ("model", "gpt-4o"), ("status", "ok"), ("team", "search"))
    assert got["aimeter_gateway_requests_total", req] == 2
    assert got["aimeter_gateway_rejected_total", (("api", "openai.chat"), ("code", "401"))] == 1
    tokens = {kind: got["aimeter_gateway_tokens_total", (("model", "gpt-4o"), ("team", "search"), ("type", kind))]
              for kind in ("input", "output", "cache_read")}
    assert tokens == {"input": 150, "output": 15, "cache_read": 40}
    up = (("api", "openai.chat"), ("backend", "openai"))
    assert got["aimeter_gateway_latency_seconds_bucket", (*up, ("le", "0.25"), ("part", "upstream"))] == 1
    assert got["aimeter_gateway_latency_seconds_bucket", (*up, ("le", "+Inf"), ("part", "upstream"))] == 2
    assert got["aimeter_gateway_latency_seconds_sum", (*up, ("part", "added"))] == pytest.approx(0.0004)
    assert got["aimeter_gateway_ttft_seconds_count", (*up, ("part", "upstream"))] == 1
    assert got["aimeter_gateway_ttft_seconds_sum", (*up, ("part", "upstream"))] == pytest.approx(0.0997)
    assert got["aimeter_events_emitted_total", ()] == 2
    assert b"# TYPE aimeter_spool_bytes gauge" in text
    assert b"# HELP aimeter_gateway_requests_total" in text


def test_team_labels_are_bounded() -> None:
    bound = Bounded(limit=MAX_VALUES)
    labels = {bound(f"team-{i}") for i in range(MAX_VALUES + 50)}
    assert len(labels) == MAX_VALUES + 1
    assert OTHER in labels
    assert bound("team-0") == "team-0"  # the first ones keep their own series


def test_scrape_needs_the_bearer_token_and_refuses_browsers() -> None:
    check_scrape({"authorization": "Bearer t0k"}, "t0k")
    for headers, status in [({}, 401), ({"authorization": "Bearer nope"}, 401), ({"authorization": "Basic t0k"}, 401),
                            ({"authorization": "Bearer t0k", "origin": "https://x"}, 403),
                            ({"authorization": "Bearer t0k", "sec-fetch-site": "cross-site"}, 403)]:
        with pytest.raises(MetricsDenied) as caught:
            check_scrape(headers, "t0k")
        assert caught.value.status == status


def test_token_file_is_created_private_and_refused_when_readable(tmp_path) -> None:
    path = tmp_path / "d" / "metrics_token"
    token = ensure_token(path)
    assert len(token) >= 40
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_token(path) == token
    path.chmod(0o644)
    with pytest.raises(PermissionError):
        ensure_token(path)


async def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "path": "/metrics", "method": "GET", "headers": headers, "query_string": b""},
              receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_gateway_metrics_route(tmp_path) -> None:
    from aimeter.config import parse_config  # noqa: PLC0415
    from aimeter.gateway.app import Gateway  # noqa: PLC0415

    config = parse_config("backends:\n  o: {kind: openai, base_url: 'http://127.0.0.1:1/v1', deployment: proprietary, "
                          "provider: openai}\nmodels:\n  gpt-4o: {backend: o}\n")
    sink = SimpleNamespace(metrics=lambda: {"aimeter_events_emitted_total": 7}, accepting=lambda: True)

    def gateway(token: str | None) -> Gateway:
        return Gateway(config, sink, gateway_id="t", max_body_bytes=1024, upstream_timeout_s=1, keys=None,
                       metrics_token=token)

    assert asyncio.run(_call(gateway(None), [(b"authorization", b"Bearer x")]))[0] == 404
    assert asyncio.run(_call(gateway("x"), []))[0] == 401
    assert asyncio.run(_call(gateway("x"), [(b"authorization", b"Bearer x"), (b"origin", b"http://a")]))[0] == 403
    status, body = asyncio.run(_call(gateway("x"), [(b"authorization", b"Bearer x")]))
    assert status == 200
    assert samples(body)["aimeter_events_emitted_total", ()] == 7


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pricer_metrics_server_counts_usd_and_not_priced_and_checks_host() -> None:
    metrics = PricerMetrics()
    event = SimpleNamespace(attribution=SimpleNamespace(team="search"), model_served="gpt-4o", model_requested="x")
    priced = ((10**12, 5 * 10**11), None, SimpleNamespace(status="priced"))
    unpriced = ((None,), None, SimpleNamespace(status="unpriced"))
    metrics.priced([event, event, event], [priced, priced, unpriced])
    metrics.batch(3)
    port = _free_port()
    server = serve_metrics(metrics, port, "tok")
    assert server is not None
    try:
        assert serve_metrics(metrics, port, "tok") is None  # taken: one log line, no exception
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer tok"})) as resp:
            got = samples(resp.read())
        assert got["aimeter_pricer_cost_usd_total", (("model", "gpt-4o"), ("team", "search"))] == 3.0
        assert got["aimeter_pricer_not_priced_total", (("status", "unpriced"),)] == 1
        assert got["aimeter_pricer_batch_events_count", ()] == 1
        for headers, status in [({}, 401), ({"Authorization": "Bearer tok", "Host": "attacker.example"}, 403)]:
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers))
            assert caught.value.code == status
    finally:
        server.shutdown()
        server.server_close()
