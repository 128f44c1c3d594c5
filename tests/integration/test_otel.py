"""OpenTelemetry export (issue 20): one CLIENT span per forwarded request with the GenAI conventions' attributes,
and the GenAI client metrics, read back from the SDK's in-memory exporters. Real HTTP: the openai SDK -> gateway
(its own server) -> the project's fake upstream. Off by default, the SDK is not even imported."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aimeter.config import parse_config
from aimeter.gateway.app import Gateway
from aimeter.gateway.otel import OtelRecorder
from aimeter.pricer.overrides_load import load_price_book
from tests.support.http_server import serving
from tests.support.publisher_sink import Sink
from tests.support.upstream_thread import fake_upstream_thread

pytestmark = pytest.mark.integration
CONFIG = """
backends:
  openai: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
  vllm:
    kind: openai_compatible
    base_url: http://127.0.0.1:{port}/v1
    deployment: self_hosted
    provider: vllm
    gpu: {{gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: "2.50", sustained_tokens_per_second: 2500}}
models:
  gpt-4o-mini: {{backend: openai}}
  llama-3.1-8b: {{backend: vllm}}
"""


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[int, InMemorySpanExporter, InMemoryMetricReader]]:
    with fake_upstream_thread() as upstream_port:
        config = parse_config(CONFIG.format(port=upstream_port))
        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        meters = MeterProvider(metric_readers=[reader])
        recorder = OtelRecorder(config, tracer_provider, meters, load_price_book(config))
        gateway = Gateway(config, Sink(), gateway_id="gw-otel", max_body_bytes=1 << 20, upstream_timeout_s=30,
                          keys=None, credentials=lambda _b: "sk-x", tracer=recorder)
        with serving(gateway) as (_, port):
            yield port, spans, reader


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points]


def test_a_span_and_genai_metrics_per_request(traced) -> None:
    port, spans, reader = traced
    spans.clear()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                           default_headers={"X-Aimeter-Team": "search"})
    done = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "fake: prompt=1000 completion=100"}])
    done.parse()
    with client.chat.completions.create(model="llama-3.1-8b", stream=True, messages=[
            {"role": "user", "content": "fake: prompt=300 completion=30"}]) as stream:
        for _ in stream:
            pass

    chat, llama = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert (chat.name, chat.kind) == ("chat gpt-4o-mini", SpanKind.CLIENT)
    a = chat.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.provider.name"], a["gen_ai.request.model"]) == (
        "chat", "openai", "gpt-4o-mini")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (1000, 100)
    assert a["aimeter.event_id"] == done.headers["x-aimeter-event-id"]
    assert (a["aimeter.team"], a["aimeter.status"], a["aimeter.stream"]) == ("search", "ok", False)
    # gpt-4o-mini list price: $0.15 / 1M input, $0.60 / 1M output.
    assert a["aimeter.cost_usd"] == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    assert a["aimeter.cost.status"] == "list_price_estimate"
    assert chat.status.status_code is not StatusCode.ERROR
    assert chat.end_time > chat.start_time

    b = llama.attributes
    assert (b["gen_ai.provider.name"], b["gen_ai.usage.input_tokens"], b["aimeter.stream"]) == ("vllm", 300, True)
    assert b["aimeter.cost.status"] == "self_hosted"  # priced by the pricer from the GPU history
    assert "aimeter.cost_usd" not in b

    tokens = {(p.attributes["gen_ai.request.model"], p.attributes["gen_ai.token.type"]): p.sum
              for p in points(reader, "gen_ai.client.token.usage")}
    assert tokens[("gpt-4o-mini", "input")] == 1000
    assert tokens[("llama-3.1-8b", "output")] == 30
    assert sum(p.count for p in points(reader, "gen_ai.client.operation.duration")) >= 2
    assert [p.attributes["gen_ai.request.model"] for p in points(reader, "gen_ai.server.time_to_first_token")] == [
        "llama-3.1-8b"]
    assert sum(p.value for p in points(reader, "aimeter.gen_ai.cost")) == pytest.approx(0.00021)


def test_an_upstream_error_is_an_error_span(traced) -> None:
    port, spans, _reader = traced
    spans.clear()
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "fake: status=500"}])
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "upstream_error"


def test_off_by_default_the_sdk_is_not_loaded(tmp_path) -> None:
    code = ("import sys\nfrom aimeter.config import parse_config\nfrom aimeter.gateway import run\n"
            "from aimeter.settings import Settings\n"
            "config = parse_config('backends: {}\\nmodels: {}\\n')\n"
            f"assert run._tracer(Settings(data_dir={str(tmp_path)!r}), config) is None\n"
            "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'aimeter.gateway.otel'))]\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
