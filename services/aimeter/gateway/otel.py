"""OpenTelemetry export of the gateway's requests, off unless ``AIMETER_OTEL_ENDPOINT`` is set.

Off, nothing here is imported and the request path pays one ``is None`` test (``app.Gateway._observe``). On,
each forwarded request becomes one CLIENT span named ``{gen_ai.operation.name} {gen_ai.request.model}`` with
the GenAI semantic conventions' attributes (``gen_ai.*``: operation, provider, request and response model,
token usage) and ours (``aimeter.*``: team, project, key id, backend, status, the ``event_id`` that finds the
row in ClickHouse), plus the GenAI client metrics: ``gen_ai.client.token.usage``,
``gen_ai.client.operation.duration`` and ``gen_ai.server.time_to_first_token``. Spans and metrics leave in
the SDK's own background threads (batch span processor, periodic metric reader) over OTLP/HTTP.

On, it is not cheap: ~200 us of CPU per request on this box, nearly all in the Python SDK (five metric
records ~70 us, one span ~35 us with its attributes) and ~20 us for the price estimate; the gateway's own
path is ~77 us. Off, it costs nothing. Measured by calling ``Gateway._observe`` as benchmarks/metrics_micro.py
does, with a batch span processor and an in-memory metric reader.

Cost, ``aimeter.cost_usd``: the gateway prices proprietary requests with the pricer's pure core
(``PriceBook.price_tokens``: genai-prices list prices plus the overrides file) when OpenTelemetry is on, as
an estimate for traces; ``aimeter.cost.status`` says what it is. Self-hosted requests are priced from the
GPU cost history in ClickHouse, which the gateway does not read: they carry no cost attribute
(``aimeter.cost.status = "self_hosted"``). The ledger's Decimal amounts in ClickHouse stay the reference.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, StatusCode, TracerProvider

from aimeter.config import GatewayConfig
from aimeter.events import Deployment, Status
from aimeter.pricer.pricebook import Priced

if TYPE_CHECKING:
    from aimeter.gateway.app import Request
    from aimeter.gateway.proxy import Outcome
    from aimeter.pricer.pricebook import PriceBook, Resolved

# The event's api -> gen_ai.operation.name (the conventions' well-known values).
OPERATIONS = {"openai.chat": "chat", "openai.responses": "chat", "openai.completions": "text_completion",
              "openai.embeddings": "embeddings", "anthropic.messages": "chat", "gemini.generate_content":
              "generate_content", "ollama.chat": "chat", "ollama.generate": "text_completion"}
# A backend's provider -> gen_ai.provider.name where the conventions name it differently.
PROVIDERS = {"google": "gcp.gemini", "gemini": "gcp.gemini", "azure": "azure.ai.openai",
             "azure_openai": "azure.ai.openai", "bedrock": "aws.bedrock"}
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
MAX_RESOLVED = 4096  # distinct (provider, model names, hour) price resolutions kept
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


class OtelRecorder:
    """Turns one forwarded request into a span and GenAI metric points."""

    def __init__(self, config: GatewayConfig, tracer_provider: TracerProvider, meter_provider: MeterProvider,
                 prices: PriceBook | None = None) -> None:
        self.config = config
        self.prices = prices
        self._resolved: dict[tuple[str, tuple[str, ...], datetime], Resolved | Priced] = {}
        self.tracer = tracer_provider.get_tracer("aimeter.gateway")
        meter = meter_provider.get_meter("aimeter.gateway")
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per request, by gen_ai.token.type.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Request duration through the gateway.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token", unit="s", description="Time to the first streamed byte.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.cost = meter.create_counter(
            "aimeter.gen_ai.cost", unit="USD", description="List-price estimate of proprietary requests (the "
            "ledger in ClickHouse is exact and prices self-hosted requests too).")

    def request(self, *, api: str, backend: str, request: Request, outcome: Outcome, started: datetime,
                total_s: float, ttft_s: float | None) -> None:
        declared = self.config.backends[backend]
        usage, extracted = outcome.extracted.usage, outcome.extracted
        attribution = request.attribution
        common: dict[str, Any] = {
            "gen_ai.operation.name": OPERATIONS.get(api, api.rpartition(".")[2]),
            "gen_ai.provider.name": PROVIDERS.get(declared.provider, declared.provider),
            "gen_ai.request.model": request.model,
            "gen_ai.response.model": extracted.model_served or request.model,
            "aimeter.team": attribution.team,
        }
        if outcome.status is not Status.OK:
            common["error.type"] = outcome.status.value
        attributes = {
            **common,
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_input_tokens,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_creation_input_tokens,
            "aimeter.event_id": outcome.marker[1].decode(),
            "aimeter.api": api, "aimeter.backend": backend, "aimeter.deployment": declared.deployment.value,
            "aimeter.project": attribution.project, "aimeter.api_key_id": attribution.api_key_id,
            "aimeter.status": outcome.status.value, "aimeter.usage_source": extracted.source.value,
            "aimeter.stream": outcome.streamed, "http.response.status_code": outcome.http_status,
            **self._cost(declared.deployment, declared.provider, request, outcome, started),
        }
        start_ns = int(started.timestamp() * 1e9)
        span = self.tracer.start_span(f"{common['gen_ai.operation.name']} {request.model}", kind=SpanKind.CLIENT,
                                      start_time=start_ns, attributes=attributes)
        if outcome.status is not Status.OK:
            span.set_status(StatusCode.ERROR, outcome.problem[:200] or outcome.status.value)
        span.end(end_time=start_ns + int(total_s * 1e9))
        self.duration.record(total_s, common)
        if ttft_s is not None:
            self.ttft.record(ttft_s, common)
        self.token_usage.record(usage.input_tokens, {**common, "gen_ai.token.type": "input"})
        self.token_usage.record(usage.output_tokens, {**common, "gen_ai.token.type": "output"})
        if "aimeter.cost_usd" in attributes:
            self.cost.add(attributes["aimeter.cost_usd"], common)

    def _cost(self, deployment: Deployment, provider: str, request: Request, outcome: Outcome,
              started: datetime) -> dict[str, Any]:
        if deployment is Deployment.SELF_HOSTED:
            return {"aimeter.cost.status": "self_hosted"}  # GPU history is in ClickHouse: the pricer's to price
        if self.prices is None:
            return {"aimeter.cost.status": "not_priced_by_gateway"}
        price_provider, names = self.prices.price_names(provider, request.model, outcome.extracted.model_served)
        # Resolving a price (genai-prices lookup, overrides, tiers) cost ~100 us a request; per hour is exact
        # enough for an estimate, and the charge itself stays per request.
        key = (price_provider, names, started.replace(minute=0, second=0, microsecond=0))
        resolved = self._resolved.get(key)
        if resolved is None:
            if len(self._resolved) >= MAX_RESOLVED:
                self._resolved.clear()
            resolved = self._resolved[key] = self.prices.resolve(price_provider, names, started)
        priced = resolved if isinstance(resolved, Priced) else self.prices.charge(outcome.extracted.usage, resolved)
        if priced.cost_usd is None:
            return {"aimeter.cost.status": priced.pricing_status}
        return {"aimeter.cost_usd": float(priced.cost_usd), "aimeter.cost.status": "list_price_estimate",
                "aimeter.price_version": priced.price_version}


def otlp_recorder(endpoint: str, gateway_id: str, config: GatewayConfig) -> OtelRecorder:
    """Spans and metrics to an OTLP/HTTP collector at ``endpoint`` (its base URL, e.g. http://127.0.0.1:4318)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    from aimeter.pricer.overrides_load import load_price_book  # noqa: PLC0415 - genai-prices only when on

    base = endpoint.rstrip("/")
    resource = Resource.create({"service.name": "aimeter-gateway", "service.instance.id": gateway_id})
    tracer_provider = SdkTracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
    meter_provider = SdkMeterProvider(resource=resource, metric_readers=[reader])
    started = time.monotonic()
    recorder = OtelRecorder(config, tracer_provider, meter_provider, load_price_book(config))
    print(f"gateway: OpenTelemetry spans and GenAI metrics to {base} (OTLP/HTTP; price book loaded in "
          f"{time.monotonic() - started:.1f} s)", flush=True)
    return recorder
