"""The pure pricing core: a UsageEvent in, a Decimal cost out. No I/O, no clock, no environment.

* Proprietary models: genai-prices list prices (pinned package version), at the event's own time.
* Self-hosted backends: the declared GPU cost amortised over sustained throughput,
  $/GPU-hour x GPUs / (tokens/s x 3600) per token, plus what the same tokens would have
  cost on the backend's reference proprietary model (the savings basis).
* Unknown models are never $0: cost is None and the status says ``unpriced``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from importlib.metadata import version

import genai_prices

from aimeter.config import Backend, GatewayConfig, GpuCost
from aimeter.events import Deployment, TokenUsage, UsageEvent

# ClickHouse stores Decimal(38, 12); rounding here, once, keeps Python and SQL totals identical.
QUANTUM = Decimal("0.000000000001")
GENAI_PRICES_VERSION = f"genai-prices=={version('genai-prices')}"
PRICED = "priced"
UNPRICED = "unpriced"
SECONDS_PER_HOUR = Decimal(3600)


def money(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Priced:
    cost_usd: Decimal | None
    input_cost_usd: Decimal | None
    output_cost_usd: Decimal | None
    reference_cost_usd: Decimal | None
    pricing_status: str
    price_source: str
    price_version: str
    note: str = ""


def unpriced(source: str, note: str) -> Priced:
    return Priced(None, None, None, None, UNPRICED, source, GENAI_PRICES_VERSION, note)


def genai_usage(usage: TokenUsage) -> genai_prices.Usage:
    """Our normalized classes map 1:1 onto genai-prices' (both count cache tokens inside input)."""
    return genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
        cache_write_tokens=usage.cache_creation_input_tokens,
        cache_write_5m_tokens=usage.cache_creation_5m_input_tokens,
        cache_write_1h_tokens=usage.cache_creation_1h_input_tokens,
        input_audio_tokens=usage.input_audio_tokens,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=usage.reasoning_output_tokens,
        output_audio_tokens=usage.output_audio_tokens,
    )


def list_price(usage: TokenUsage, models: list[str], provider: str, event: UsageEvent) -> Priced:
    """The first of ``models`` that genai-prices knows for ``provider``, priced at the event's time."""
    tried = []
    for model in dict.fromkeys(m for m in models if m):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unpriced token classes are reported by us, not as warnings
                calc = genai_prices.calc_price(genai_usage(usage), model, provider_id=provider,
                                               genai_request_timestamp=event.started_at)
        except LookupError:
            tried.append(model)
            continue
        input_cost, output_cost = money(calc.input_price), money(calc.output_price)
        # Total is the sum of the rounded parts, so components always add up to it exactly.
        return Priced(input_cost + output_cost, input_cost, output_cost, None,
                      PRICED, f"genai-prices:{provider}/{calc.model.id}", GENAI_PRICES_VERSION)
    return unpriced("genai-prices", f"no list price for {provider}/{' or '.join(tried) or '<no model>'}")


def gpu_cost_per_token(gpu: GpuCost) -> Decimal:
    """Marginal $/token: the backend's hourly GPU cost spread over the tokens it sustains in that hour."""
    return gpu.usd_per_gpu_hour * gpu.gpu_count / (gpu.sustained_tokens_per_second * SECONDS_PER_HOUR)


def self_hosted_price(event: UsageEvent, backend: Backend) -> Priced:
    assert backend.gpu is not None  # enforced by the config model for self_hosted backends
    per_token = gpu_cost_per_token(backend.gpu)
    usage = event.usage
    input_cost = money(usage.input_tokens * per_token)
    output_cost = money(usage.output_tokens * per_token)
    reference = None
    if backend.reference_model is not None:
        ref = list_price(usage, [backend.reference_model.model], backend.reference_model.provider, event)
        reference = ref.cost_usd
    gpu = backend.gpu
    source = f"gpu:{gpu.gpu_count}x{gpu.gpu_type}@{gpu.usd_per_gpu_hour}/h,{gpu.sustained_tokens_per_second}tok/s"
    return Priced(input_cost + output_cost, input_cost, output_cost, reference, PRICED, source, "config")


class PriceBook:
    """Prices events against one gateway config (for backends) and the pinned genai-prices snapshot."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    def price(self, event: UsageEvent) -> Priced:
        backend = self.config.backends.get(event.backend)
        if event.deployment is Deployment.SELF_HOSTED:
            if backend is None or backend.gpu is None:
                return unpriced("gpu", f"self-hosted backend {event.backend!r} has no GPU cost in the config")
            return self_hosted_price(event, backend)
        route = self.config.models.get(event.model_requested)
        upstream = route.upstream_model if route else None
        candidates = [event.model_served, upstream or "", event.model_requested]
        return list_price(event.usage, candidates, event.provider, event)
