"""Pricing core: every expected cost is hand-computed from the published per-million-token price."""

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from aimeter.config import parse_config
from aimeter.events import TokenUsage, UsageEvent
from aimeter.pricer.core import PRICED, UNPRICED, PriceBook

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  vllm:
    kind: openai_compatible
    base_url: "http://127.0.0.1:8000/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {gpu_type: H100, gpu_count: 2, usd_per_gpu_hour: "2.50", sustained_tokens_per_second: 2500}
    reference_model: {provider: openai, model: gpt-4o}
models:
  gpt-4o-mini: {backend: openai}
  gpt-4o: {backend: openai}
  llama: {backend: vllm}
""")
BOOK = PriceBook(CONFIG)
M = Decimal(1_000_000)


def event(model: str, backend: str = "openai", deployment: str = "proprietary", provider: str = "openai",
          **usage: int) -> UsageEvent:
    t = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
    return UsageEvent(event_id="0193a6f0-0000-7000-8000-000000000001", started_at=t, ended_at=t,
                      api="openai.chat", backend=backend, provider=provider, deployment=deployment,
                      model_requested=model, status="ok", http_status=200, usage_source="reported",
                      usage=TokenUsage(**usage))


def test_gpt_4o_mini_with_cached_input():
    # Published: $0.15 / 1M input, $0.075 / 1M cached input, $0.60 / 1M output.
    p = BOOK.price(event("gpt-4o-mini", input_tokens=1000, cache_read_input_tokens=400, output_tokens=500))
    expected = (600 * Decimal("0.15") + 400 * Decimal("0.075") + 500 * Decimal("0.60")) / M
    assert p.cost_usd == expected == Decimal("0.00042")
    assert p.pricing_status == PRICED
    assert p.input_cost_usd + p.output_cost_usd == p.cost_usd


def test_self_hosted_by_throughput_and_reference_cost():
    # 2 GPUs x $2.50/h over 2,500 tok/s x 3,600 s = $5 per 9,000,000 tokens.
    p = BOOK.price(event("llama", backend="vllm", deployment="self_hosted", provider="vllm",
                         input_tokens=1000, output_tokens=500))
    assert p.input_cost_usd == Decimal("0.000555555556")  # 1000 * 5 / 9e6, rounded to 12 places
    assert p.output_cost_usd == Decimal("0.000277777778")  # 500 * 5 / 9e6
    assert p.cost_usd == Decimal("0.000833333334")
    # Reference gpt-4o: $2.50 / 1M input, $10 / 1M output.
    assert p.reference_cost_usd == (1000 * Decimal("2.50") + 500 * Decimal("10")) / M


def test_unknown_model_is_unpriced_never_zero():
    p = BOOK.price(event("gpt-nonexistent-9", input_tokens=10, output_tokens=10))
    assert p.cost_usd is None
    assert p.pricing_status == UNPRICED
    assert "gpt-nonexistent-9" in p.note


def test_served_model_snapshot_name_is_priced():
    e = event("gpt-4o", input_tokens=1_000_000).model_copy(update={"model_served": "gpt-4o-2024-08-06"})
    assert BOOK.price(e).cost_usd == Decimal("2.50")


usages = st.builds(
    lambda i, c, o, r: TokenUsage(input_tokens=i, cache_read_input_tokens=min(c, i), output_tokens=o,
                                  reasoning_output_tokens=min(r, o)),
    st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**7),
)


@given(usages, st.sampled_from(["gpt-4o-mini", "gpt-4o", "llama"]))
def test_components_sum_to_total_and_pricing_is_deterministic(usage, model):
    kwargs = usage.model_dump()
    e = event(model, **kwargs) if model != "llama" else event(model, "vllm", "self_hosted", "vllm", **kwargs)
    first, second = BOOK.price(e), BOOK.price(e)
    assert first == second
    assert first.input_cost_usd + first.output_cost_usd == first.cost_usd
    assert first.cost_usd.as_tuple().exponent >= -12
