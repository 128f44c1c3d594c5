"""Pricing core: every expected cost is hand-computed from the published per-million-token price.

Each case asserts the exact Decimal total *and* its per-class components, which must add up to it.
"""

from datetime import UTC, datetime
from decimal import Decimal

from aimeter.config import parse_config
from aimeter.events import TokenUsage, UsageEvent
from aimeter.pricer.pricebook import PRICED, UNPRICED, PriceBook

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  anthropic: {kind: anthropic, base_url: "https://api.anthropic.com", deployment: proprietary, provider: anthropic}
  gemini: {kind: gemini, base_url: "https://generativelanguage.googleapis.com", deployment: proprietary,
           provider: google}
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
  o3: {backend: openai}
  claude-opus-4-1: {backend: anthropic}
  gemini-2.5-pro: {backend: gemini}
  llama: {backend: vllm}
""")
BOOK = PriceBook(CONFIG)
M = Decimal(1_000_000)
NOV_15 = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


def event(model: str, backend: str = "openai", deployment: str = "proprietary", provider: str = "openai", *,
          at: datetime = NOV_15, compute_seconds: float | None = None, api: str = "openai.chat",
          tags: dict[str, str] | None = None, **usage: int) -> UsageEvent:
    return UsageEvent(event_id="0193a6f0-0000-7000-8000-000000000001", started_at=at, ended_at=at,
                      api=api, backend=backend, provider=provider, deployment=deployment,
                      model_requested=model, status="ok", http_status=200, usage_source="reported",
                      usage=TokenUsage(**usage), backend_compute_seconds=compute_seconds,
                      attribution={"team": "search", "tags": tags or {}})


def assert_adds_up(p) -> None:
    c = p.components
    assert c.total == p.cost_usd == p.input_cost_usd + p.output_cost_usd + c["other"]
    assert all(v.as_tuple().exponent >= -12 for v in c.by_class.values())


def test_openai_with_cached_input():
    # gpt-4o-mini, published: $0.15 / 1M input, $0.075 / 1M cached input, $0.60 / 1M output.
    p = BOOK.price(event("gpt-4o-mini", input_tokens=1000, cache_read_input_tokens=400, output_tokens=500))
    assert p.components["input_text"] == 600 * Decimal("0.15") / M == Decimal("0.00009")
    assert p.components["cache_read"] == 400 * Decimal("0.075") / M == Decimal("0.00003")
    assert p.components["output_text"] == 500 * Decimal("0.60") / M == Decimal("0.0003")
    assert p.cost_usd == Decimal("0.00042")
    assert (p.pricing_status, p.cost_basis, p.price_source) == (PRICED, "list", "genai-prices:openai/gpt-4o-mini")
    assert p.price_version == "genai-prices==0.2.3"
    assert_adds_up(p)


def test_openai_reasoning_output_is_billed_as_output_and_shown_apart():
    # o3 since 2025-06-10: $2 / 1M input, $8 / 1M output; reasoning tokens are output tokens at the output rate.
    p = BOOK.price(event("o3", input_tokens=2000, output_tokens=1500, reasoning_output_tokens=1200))
    assert p.components["input_text"] == 2000 * Decimal(2) / M == Decimal("0.004")
    assert p.components["output_text"] == 300 * Decimal(8) / M == Decimal("0.0024")
    assert p.components["reasoning"] == 1200 * Decimal(8) / M == Decimal("0.0096")
    assert p.cost_usd == Decimal("0.016")
    assert_adds_up(p)


def test_priced_at_the_events_own_time():
    # o3 before 2025-06-10: $10 / 1M input, $40 / 1M output.
    p = BOOK.price(event("o3", at=datetime(2025, 5, 1, tzinfo=UTC), input_tokens=2000, output_tokens=1500,
                         reasoning_output_tokens=1200))
    assert p.cost_usd == (2000 * Decimal(10) + 1500 * Decimal(40)) / M == Decimal("0.08")


def test_anthropic_5m_and_1h_cache_writes_and_cache_reads():
    # claude-opus-4-1: $15 input, $1.50 cache read, $18.75 5-minute cache write, $30 1-hour write, $75 output.
    usage = {"input_tokens": 40_000, "cache_read_input_tokens": 20_000, "cache_creation_input_tokens": 10_000,
             "cache_creation_5m_input_tokens": 4_000, "cache_creation_1h_input_tokens": 6_000, "output_tokens": 2_000}
    p = BOOK.price(event("claude-opus-4-1", "anthropic", provider="anthropic", api="anthropic.messages", **usage))
    c = p.components
    assert c["input_text"] == 10_000 * Decimal(15) / M == Decimal("0.15")
    assert c["cache_read"] == 20_000 * Decimal("1.50") / M == Decimal("0.03")
    assert c["cache_write_5m"] == 4_000 * Decimal("18.75") / M == Decimal("0.075")
    assert c["cache_write_1h"] == 6_000 * Decimal(30) / M == Decimal("0.18")
    assert c["output_text"] == 2_000 * Decimal(75) / M == Decimal("0.15")
    assert p.cost_usd == Decimal("0.585")
    assert_adds_up(p)


def test_cache_write_without_ttl_is_a_5_minute_write():
    p = BOOK.price(event("claude-opus-4-1", "anthropic", provider="anthropic", input_tokens=1000,
                         cache_creation_input_tokens=1000))
    assert p.components["cache_write_5m"] == 1000 * Decimal("18.75") / M


def test_gemini_above_the_200k_tier_prices_every_token_at_the_tier_rate():
    # gemini-2.5-pro: prompts over 200k tokens pay $2.50 input, $0.25 cached, $15 output (else $1.25, $0.125, $10).
    p = BOOK.price(event("gemini-2.5-pro", "gemini", provider="google", input_tokens=250_000,
                         cache_read_input_tokens=50_000, output_tokens=10_000))
    assert p.components["input_text"] == 200_000 * Decimal("2.50") / M == Decimal("0.5")
    assert p.components["cache_read"] == 50_000 * Decimal("0.25") / M == Decimal("0.0125")
    assert p.components["output_text"] == 10_000 * Decimal(15) / M == Decimal("0.15")
    assert p.cost_usd == Decimal("0.6625")
    assert p.price_source == "genai-prices:google/gemini-2.5-pro tier>200000"
    assert_adds_up(p)


def test_gemini_at_exactly_200k_stays_on_the_base_rate():
    p = BOOK.price(event("gemini-2.5-pro", "gemini", provider="google", input_tokens=200_000, output_tokens=1000))
    assert p.cost_usd == (200_000 * Decimal("1.25") + 1000 * Decimal(10)) / M == Decimal("0.26")
    assert "tier" not in p.price_source


def test_self_hosted_by_throughput_and_reference_cost():
    # 2 GPUs x $2.50/h over 2,500 tok/s x 3,600 s = $5 per 9,000,000 tokens.
    p = BOOK.price(event("llama", backend="vllm", deployment="self_hosted", provider="vllm",
                         input_tokens=1000, output_tokens=500))
    assert p.input_cost_usd == Decimal("0.000555555556")  # 1000 * 5 / 9e6, rounded to 12 places
    assert p.output_cost_usd == Decimal("0.000277777778")  # 500 * 5 / 9e6
    assert p.cost_usd == Decimal("0.000833333334")
    assert p.cost_basis == "throughput"
    # Reference gpt-4o: $2.50 / 1M input, $10 / 1M output.
    assert p.reference_cost_usd == (1000 * Decimal("2.50") + 500 * Decimal("10")) / M
    assert_adds_up(p)


def test_unknown_model_is_unpriced_never_zero():
    p = BOOK.price(event("gpt-nonexistent-9", input_tokens=10, output_tokens=10))
    assert p.cost_usd is None
    assert p.components is None
    assert p.pricing_status == UNPRICED
    assert "gpt-nonexistent-9" in p.note


def test_served_model_snapshot_name_is_priced():
    e = event("gpt-4o", input_tokens=1_000_000).model_copy(update={"model_served": "gpt-4o-2024-08-06"})
    assert BOOK.price(e).cost_usd == Decimal("2.50")
