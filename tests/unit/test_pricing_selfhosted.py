"""Self-hosted marginal cost: GPU cost periods, throughput, GPU-seconds. Hand-computed, exact."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aimeter.config import ConfigError, parse_config
from aimeter.pricer.core import UNPRICED, PriceBook
from aimeter.pricer.gpu_periods import ALWAYS, desired_periods, plan_changes
from aimeter.pricer.rates import split_exact
from tests.unit.test_pricing import event

CONFIG = parse_config("""
backends:
  vllm:
    kind: openai_compatible
    base_url: "http://127.0.0.1:8000/v1"
    deployment: self_hosted
    provider: vllm
    gpu:
      - {gpu_type: A100, gpu_count: 2, usd_per_gpu_hour: "2.50", sustained_tokens_per_second: 2500,
         effective_to: 2026-11-01}
      - {gpu_type: H100, gpu_count: 4, usd_per_node_hour: "3.60", sustained_tokens_per_second: 1000,
         effective_from: 2026-11-01}
    reference_model: {provider: openai, model: gpt-4o}
  ollama:
    kind: ollama
    base_url: "http://127.0.0.1:11434"
    deployment: self_hosted
    provider: ollama
    gpu: {gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: "3.60", sustained_tokens_per_second: 50}
  llamacpp:
    kind: openai_compatible
    base_url: "http://127.0.0.1:8081/v1"
    deployment: self_hosted
    provider: llama.cpp
    gpu: {gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: "3.60", sustained_tokens_per_second: 50,
          parallel_requests: 4, effective_from: 2026-06-01}
models:
  llama: {backend: vllm}
  qwen: {backend: ollama}
  mistral: {backend: llamacpp}
""")
BOOK = PriceBook(CONFIG)
M = Decimal(1_000_000)


def hosted(backend: str, at: datetime = datetime(2026, 11, 15, tzinfo=UTC), **kwargs):
    return event("m", backend=backend, deployment="self_hosted", provider=backend, at=at, **kwargs)


def test_throughput_uses_the_gpu_period_in_force_at_the_event():
    # From 2026-11-01: the node costs $3.60/h and sustains 1,000 tok/s = 3.6M tokens/h -> $1 per 1M tokens.
    p = BOOK.price(hosted("vllm", input_tokens=1000, output_tokens=500))
    assert (p.input_cost_usd, p.output_cost_usd, p.cost_usd) == (Decimal("0.001"), Decimal("0.0005"),
                                                                 Decimal("0.0015"))
    assert p.cost_basis == "throughput"
    assert p.price_source == "gpu:4xH100 $3.60/h from 2026-11-01 00:00 at 1000 tok/s"
    # Before: 2 x $2.50/h over 2,500 tok/s -> $5 per 9M tokens.
    before = BOOK.price(hosted("vllm", at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC), input_tokens=9_000_000))
    assert before.cost_usd == Decimal(5)


def test_self_hosted_reference_cost_is_the_reference_models_list_price():
    p = BOOK.price(hosted("vllm", input_tokens=1000, output_tokens=500))
    assert p.reference_cost_usd == (1000 * Decimal("2.50") + 500 * Decimal(10)) / M  # gpt-4o list price


def test_gpu_seconds_when_the_backend_reports_compute_time():
    # Ollama reported 2.5 s of GPU time; 1 x L4 at $3.60/h = $0.001 per second -> $0.0025,
    # split 300 : 200 over the prompt and generated tokens.
    p = BOOK.price(hosted("ollama", compute_seconds=2.5, input_tokens=300, output_tokens=200))
    assert p.cost_usd == Decimal("2.5") * Decimal("3.60") / 3600 == Decimal("0.0025")
    assert (p.input_cost_usd, p.output_cost_usd) == (Decimal("0.0015"), Decimal("0.001"))
    assert p.cost_basis == "gpu_seconds"
    assert p.reference_cost_usd is None  # no reference model declared


def test_gpu_seconds_are_shared_by_parallel_slots():
    # llama.cpp with --parallel 4: 2.5 s of one slot is a quarter of the node's 2.5 s.
    p = BOOK.price(hosted("llamacpp", compute_seconds=2.5, input_tokens=300, output_tokens=200))
    assert p.cost_usd == Decimal("0.0025") / 4 == Decimal("0.000625")


def test_gpu_seconds_split_adds_up_exactly():
    # $0.001 over 1 : 2 tokens -> 0.000333333333 + 0.000666666667 (the leftover quantum goes to the larger remainder)
    p = BOOK.price(hosted("ollama", compute_seconds=1.0, input_tokens=1, output_tokens=2))
    assert (p.input_cost_usd, p.output_cost_usd) == (Decimal("0.000333333333"), Decimal("0.000666666667"))
    assert p.cost_usd == Decimal("0.001")


def test_gpu_time_without_tokens_is_still_charged():
    p = BOOK.price(hosted("ollama", compute_seconds=1.0))
    assert p.components["other"] == p.cost_usd == Decimal("0.001")


def test_no_gpu_period_at_the_event_time_is_unpriced():
    p = BOOK.price(hosted("llamacpp", at=datetime(2026, 5, 31, tzinfo=UTC), input_tokens=10))
    assert p.pricing_status == UNPRICED
    assert "no GPU cost period covering 2026-05-31" in p.note


def test_split_exact_is_exact_for_awkward_weights():
    parts = split_exact(Decimal("0.000000000010"), {"a": 1, "b": 1, "c": 1})
    assert sum(parts.values()) == Decimal("0.000000000010")
    assert sorted(parts.values()) == [Decimal("3E-12"), Decimal("3E-12"), Decimal("4E-12")]


@pytest.mark.parametrize(("gpu", "problem"), [
    ('{gpu_type: L4, gpu_count: 1, sustained_tokens_per_second: 5}', "exactly one of usd_per_gpu_hour"),
    ('{gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: 1, usd_per_node_hour: 1, sustained_tokens_per_second: 5}',
     "exactly one of"),
    ('{gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: 1, sustained_tokens_per_second: 5, '
     'effective_from: "2026-11-01T10:30:00Z"}', "whole hour"),
    ('[{gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: 1, sustained_tokens_per_second: 5},'
     ' {gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: 2, sustained_tokens_per_second: 5, effective_from: 2026-11-01}]',
     "overlap"),
])
def test_gpu_cost_is_validated(gpu: str, problem: str):
    text = f"""
backends:
  b: {{kind: ollama, base_url: "http://x:1", deployment: self_hosted, provider: ollama, gpu: {gpu}}}
models: {{}}
"""
    with pytest.raises(ConfigError, match=problem):
        parse_config(text)


def test_gpu_periods_sync_writes_only_differences():
    desired = desired_periods(CONFIG)
    assert plan_changes(CONFIG, desired, version=7) == []
    changed = dict(desired)
    changed[("ollama", ALWAYS)] = (None, "L4", 1, Decimal("9.99"), Decimal(180_000))
    stale = ("vllm", datetime(2025, 1, 1, tzinfo=UTC))
    gone = ("retired-backend", ALWAYS)
    changed[stale] = (None, "A10", 1, Decimal(1), Decimal(1))
    changed[gone] = (None, "A10", 1, Decimal(1), Decimal(1))
    rows = plan_changes(CONFIG, changed, version=8)
    assert [r[:2] + r[-2:] for r in rows] == [
        ["ollama", ALWAYS, 8, 0],  # back to the config's value
        [*stale, 8, 1],  # a period the config no longer lists: tombstoned
    ]  # the retired backend's history stays
    assert rows[0][5:7] == [Decimal("3.60"), Decimal(180_000)]
