"""Self-hosted marginal cost: GPU cost periods, throughput, GPU-seconds. Hand-computed, exact."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aimeter.config import ConfigError, parse_config
from aimeter.pricer.gpu_periods import GpuHistory, Period, history_config, normalize, plan_backend, values_of
from aimeter.pricer.pricebook import UNPRICED, PriceBook
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


def _gpu(price: str, **dates: object) -> object:
    from aimeter.config import GpuCost  # noqa: PLC0415

    return GpuCost(gpu_type="L4", gpu_count=1, usd_per_node_hour=price, sustained_tokens_per_second=50, **dates)


NOW = datetime(2026, 12, 6, 19, 40, 12, 345000, tzinfo=UTC)
DECLARED = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)


def test_a_first_declaration_starts_the_history_now_whatever_the_config_dates():
    """--month 2019-01 billed $3,720 of idle GPU: a period was stored from 1970. Now nothing starts before
    the moment the backend was first declared (a dated period from 2019 is cut there too)."""
    for periods in ([_gpu("3.60")], [_gpu("3.60", effective_from=datetime(2019, 1, 1, tzinfo=UTC))]):
        plan = plan_backend("b", periods, [], declared=None, now=NOW, version=1)
        assert plan.newly_declared
        assert plan.declared == NOW
        assert plan.target == [Period(NOW, None, values_of(periods[0]))]
        assert plan.pending_since is None
        assert "first declared" in plan.notes[0]


def test_an_undated_price_change_closes_the_period_at_the_next_minute_and_says_so():
    stored = [Period(DECLARED, None, values_of(_gpu("3.60")))]
    plan = plan_backend("b", [_gpu("1.20")], stored, declared=DECLARED, now=NOW, version=5)
    change = datetime(2026, 12, 6, 19, 41, tzinfo=UTC)
    assert plan.target == [Period(DECLARED, change, stored[0].values), Period(change, None, values_of(_gpu("1.20")))]
    assert [r[:3] + r[-2:] for r in plan.rows] == [["b", DECLARED, change, 5, 0], ["b", change, None, 5, 0]]
    assert any("price changed without dates ($3.6/h -> $1.2/h)" in n and "closed at 2026-12-06 19:41" in n
               for n in plan.notes)
    assert plan.pending_since is None


def test_an_unchanged_config_writes_nothing():
    stored = [Period(DECLARED, None, values_of(_gpu("3.60")))]
    plan = plan_backend("b", [_gpu("3.600000000000")], stored, declared=DECLARED, now=NOW, version=5)
    assert (plan.rows, plan.notes) == ([], [])


def test_a_dated_change_of_the_past_waits_for_reprice():
    """Changing the price with dates in the past is a correction: the pricer leaves reported hours alone and
    says how to apply it; `aimeter reprice --since` applies it from that moment."""
    stored = [Period(DECLARED, None, values_of(_gpu("3.60")))]
    since = datetime(2026, 12, 1, tzinfo=UTC)
    corrected = [_gpu("3.60", effective_to=since), _gpu("2.40", effective_from=since)]
    new = values_of(corrected[1])
    pricer = plan_backend("b", corrected, stored, declared=DECLARED, now=NOW, version=5)
    change = datetime(2026, 12, 6, 19, 41, tzinfo=UTC)
    assert pricer.target == [Period(DECLARED, change, stored[0].values), Period(change, None, new)]
    assert pricer.pending_since == since
    assert any("retroactive correction" in n and "aimeter reprice --since 2026-12-01T00:00" in n for n in pricer.notes)
    reprice = plan_backend("b", corrected, stored, declared=DECLARED, now=NOW, version=6, correct_since=since)
    assert reprice.target == [Period(DECLARED, since, stored[0].values), Period(since, None, new)]
    assert reprice.pending_since is None  # the correction asked for from `since` on is applied


def test_a_retired_period_is_tombstoned_and_a_stored_start_before_the_declaration_moves_to_it():
    legacy = [Period(datetime(1970, 1, 1, tzinfo=UTC), None, values_of(_gpu("3.60")))]
    plan = plan_backend("b", [_gpu("3.60")], legacy, declared=DECLARED, now=NOW, version=2)
    assert plan.target == [Period(DECLARED, None, legacy[0].values)]
    assert [(r[1], r[-1]) for r in plan.rows] == [(DECLARED, 0), (legacy[0].start, 1)]


def test_the_history_prices_requests_before_the_declaration_at_the_first_price():
    change = datetime(2026, 12, 6, 19, 41, tzinfo=UTC)
    history = {"ollama": [Period(DECLARED, change, values_of(_gpu("3.60"))),
                          Period(change, None, values_of(_gpu("1.20")))]}
    backend = history_config(CONFIG, GpuHistory(history, {"ollama": DECLARED})).backends["ollama"]
    assert backend.gpu_at(datetime(2020, 1, 1, tzinfo=UTC)).usd_per_hour == Decimal("3.60")
    assert backend.gpu_at(change - timedelta(milliseconds=1)).usd_per_hour == Decimal("3.60")
    assert backend.gpu_at(change).usd_per_hour == Decimal("1.20")


def test_a_first_period_after_the_declaration_keeps_its_start():
    """Only a period starting at the declaration is open for requests before it: a backend declared now with
    a period from next week has no price for today's requests (unpriced, as the config says)."""
    start = datetime(2026, 12, 13, tzinfo=UTC)
    history = GpuHistory({"ollama": [Period(start, None, values_of(_gpu("3.60")))]}, {"ollama": DECLARED})
    backend = history_config(CONFIG, history).backends["ollama"]
    assert backend.gpu_at(start - timedelta(days=1)) is None
    assert backend.gpu_at(start).usd_per_hour == Decimal("3.60")


def test_two_replicas_declaring_at_once_converge_on_one_period():
    v, w = values_of(_gpu("3.60")), values_of(_gpu("1.20"))
    later = DECLARED + timedelta(seconds=3)
    assert normalize([Period(later, None, v), Period(DECLARED, None, v)]) == [Period(DECLARED, None, v)]
    assert normalize([Period(DECLARED, None, v), Period(later, None, w)]) == [Period(DECLARED, later, v),
                                                                              Period(later, None, w)]
