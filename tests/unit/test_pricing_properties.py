"""Properties of the pricing core, for random usage: exact sums, determinism, idempotent re-rating."""

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
from hypothesis import given, settings
from hypothesis import strategies as st

from aimeter.events import TokenUsage
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rates import QUANTUM
from aimeter.pricer.rerate import differs, plan_page
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, event_from_row, priced_row
from tests.support.pricer_rows import event_row
from tests.unit.test_pricing import CONFIG, event
from tests.unit.test_pricing_overrides import OVERRIDES
from tests.unit.test_pricing_selfhosted import CONFIG as HOSTED_CONFIG

BOOK = PriceBook(CONFIG, OVERRIDES)
HOSTED = PriceBook(HOSTED_CONFIG)
PRICED_AT = datetime(2026, 12, 1, tzinfo=UTC)
N = st.integers(0, 10**7)


@st.composite
def usages(draw: st.DrawFn, *, media: bool = True) -> TokenUsage:
    """Any usage the event contract accepts: cache, TTL split, audio and image, reasoning."""
    inp, out = draw(N), draw(N)
    read = draw(st.integers(0, inp))
    write = draw(st.integers(0, inp - read))
    w1h = draw(st.integers(0, write))
    w5m = draw(st.integers(0, write - w1h))
    audio_in = draw(st.integers(0, inp)) if media else 0
    image_in = draw(st.integers(0, inp - audio_in)) if media else 0
    reasoning = draw(st.integers(0, out))
    audio_out = draw(st.integers(0, out - reasoning)) if media else 0
    image_out = draw(st.integers(0, out - reasoning - audio_out)) if media else 0
    return TokenUsage(input_tokens=inp, cache_read_input_tokens=read, cache_creation_input_tokens=write,
                      cache_creation_1h_input_tokens=w1h, cache_creation_5m_input_tokens=w5m,
                      input_audio_tokens=audio_in, input_image_tokens=image_in, output_tokens=out,
                      reasoning_output_tokens=reasoning, output_audio_tokens=audio_out, output_image_tokens=image_out)


PROPRIETARY = st.sampled_from([
    ("gpt-4o-mini", "openai"), ("o3", "openai"), ("claude-opus-4-1", "anthropic"), ("gemini-2.5-pro", "google"),
    ("gpt-4o", "openai"), ("acme-large", "acme"), ("gpt-4o-audio-preview", "openai"),
])


def proprietary_event(model_provider: tuple[str, str], usage: TokenUsage, batch: bool):
    model, provider = model_provider
    return event(model, provider=provider, api="openai.batch" if batch else "openai.chat", **usage.model_dump())


def hosted_event(backend: str, usage: TokenUsage, seconds: float | None):
    return event("m", backend=backend, deployment="self_hosted", provider=backend, compute_seconds=seconds,
                 **usage.model_dump())


def check_exact(priced) -> None:
    c = priced.components
    assert c.total == priced.cost_usd
    assert priced.input_cost_usd + priced.output_cost_usd + c["other"] == priced.cost_usd
    assert all(v % QUANTUM == 0 for v in c.by_class.values())


@given(PROPRIETARY, usages(), st.booleans())
def test_proprietary_components_sum_to_the_total(model_provider, usage, batch):
    priced = BOOK.price(proprietary_event(model_provider, usage, batch))
    assert priced == BOOK.price(proprietary_event(model_provider, usage, batch))
    check_exact(priced)


@given(st.sampled_from(["vllm", "ollama", "llamacpp"]), usages(), st.none() | st.floats(0, 10**5))
def test_self_hosted_components_sum_to_the_total(backend, usage, seconds):
    priced = HOSTED.price(hosted_event(backend, usage, seconds))
    check_exact(priced)
    if seconds is not None:  # GPU-seconds: the split never loses or creates a quantum
        assert priced.cost_usd == (Decimal(repr(seconds)) * Decimal("3.60") / 3600 /
                                   (4 if backend == "llamacpp" else 1)).quantize(QUANTUM)


@settings(max_examples=50)
@given(PROPRIETARY, usages(), st.booleans())
def test_repricing_the_same_event_twice_changes_nothing(model_provider, usage, batch):
    e = proprietary_event(model_provider, usage, batch)
    stored = dict(zip(COST_COLUMNS, priced_row(e, BOOK.price(e), 0, PRICED_AT), strict=True))
    assert not differs(stored, BOOK.price(e))
    plan = plan_page([e], {e.event_id: stored}, BOOK, 1, PRICED_AT)
    assert plan.rows == []
    assert plan.totals.before == plan.totals.after


@given(st.sampled_from([("gpt-4o-mini", "openai"), ("o3", "openai"), ("claude-opus-4-1", "anthropic"),
                        ("gemini-2.5-pro", "google")]), usages(media=False))
def test_totals_agree_with_genai_prices_own_calculation(model_provider, usage):
    """Our per-class arithmetic gives genai-prices' total, up to the per-class rounding (under 1e-11)."""
    model, provider = model_provider
    ours = PriceBook(CONFIG).price(event(model, provider=provider, **usage.model_dump()))
    theirs = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=usage.input_tokens, cache_read_tokens=usage.cache_read_input_tokens,
                           cache_write_tokens=usage.cache_creation_input_tokens,
                           cache_write_1h_tokens=usage.cache_creation_1h_input_tokens,
                           output_tokens=usage.output_tokens, output_reasoning_tokens=usage.reasoning_output_tokens),
        model, provider_id=provider, genai_request_timestamp=event(model).started_at,
    ).total_price
    assert abs(ours.cost_usd - theirs) <= 11 * QUANTUM / 2


@settings(max_examples=30)
@given(usages(), st.none() | st.floats(0, 10**4), st.dictionaries(st.text(max_size=8), st.text(max_size=8),
                                                                   max_size=3))
def test_a_stored_event_reads_back_as_the_same_event(usage, seconds, tags):
    """Re-rating rebuilds events from usage_events rows; ClickHouse returns UTC times naive."""
    e = event("gpt-4o", compute_seconds=seconds, tags=tags, **usage.model_dump())
    row = dict(zip(EVENT_COLUMNS, event_row(e), strict=True))
    row |= {k: row[k].replace(tzinfo=None) for k in ("started_at", "ended_at")}
    assert event_from_row(row) == e
