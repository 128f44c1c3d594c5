"""Price overrides: negotiated discounts, fixed rates, aliases, batch; and validation that names every line."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aimeter.pricer.overrides_load import DEFAULT_OVERRIDES, OverridesError, load_overrides, parse_overrides
from aimeter.pricer.pricebook import PriceBook
from tests.unit.test_pricing import CONFIG, event

M = Decimal(1_000_000)
OVERRIDES = parse_overrides("""\
version: "2026-11-r1"
aliases:
  - provider: azure_openai
    model: "prod-4o-*"
    price_as: {provider: azure, model: gpt-4o}
prices:
  - provider: acme
    model: acme-large
    input: 1.10
    cache_read: 0.11
    output: 4.40
    tiers:
      - {above_input_tokens: 100000, input: 2.20, cache_read: 0.22, output: 8.80}
  - provider: openai
    model: gpt-4o-mini
    effective_from: 2027-01-01
    input: 0.10
    output: 0.40
discounts:
  - provider: openai
    model: gpt-4o
    percent: 20
    effective_from: 2026-11-15
  - provider: openai
    percent: 5
batch:
  - provider: anthropic
    percent: 50
""", "overrides.yaml")
BOOK = PriceBook(CONFIG, OVERRIDES)


def test_negotiated_20_percent_discount_starts_mid_month():
    # gpt-4o list: $2.50 / 1M input, $10 / 1M output. 1M in + 100k out = $3.50 list.
    usage = {"input_tokens": 1_000_000, "output_tokens": 100_000}
    before = BOOK.price(event("gpt-4o", at=datetime(2026, 11, 14, 23, 59, 59, tzinfo=UTC), **usage))
    after = BOOK.price(event("gpt-4o", at=datetime(2026, 11, 15, 0, 0, tzinfo=UTC), **usage))
    # Before the 15th only the provider-wide 5% applies; from the 15th the model's 20% wins over it.
    assert before.cost_usd == Decimal("3.50") * Decimal("0.95") == Decimal("3.325")
    assert after.cost_usd == Decimal("3.50") * Decimal("0.80") == Decimal("2.80")
    assert (after.input_cost_usd, after.output_cost_usd) == (Decimal("2.0"), Decimal("0.8"))
    assert after.price_source == "genai-prices:openai/gpt-4o -20% (overrides line 20)"
    assert after.price_version.startswith("genai-prices==0.2.3; overrides=2026-11-r1@")


def test_fixed_rates_for_a_model_genai_prices_does_not_know_with_a_long_context_tier():
    small = BOOK.price(event("acme-large", provider="acme", input_tokens=100_000, cache_read_input_tokens=50_000,
                             output_tokens=1000))
    assert small.cost_usd == (50_000 * Decimal("1.10") + 50_000 * Decimal("0.11") + 1000 * Decimal("4.40")) / M
    assert small.cost_basis == "override"
    assert small.price_source == "overrides line 7: acme/acme-large"
    large = BOOK.price(event("acme-large", provider="acme", input_tokens=100_001, output_tokens=1000))
    assert large.cost_usd == (100_001 * Decimal("2.20") + 1000 * Decimal("8.80")) / M
    assert large.price_source.endswith("tier>100000")


def test_fixed_rates_win_over_genai_prices_from_their_date_and_are_not_discounted():
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    listed = BOOK.price(event("gpt-4o-mini", **usage))
    assert listed.cost_usd == (Decimal("0.15") + Decimal("0.60")) * Decimal("0.95")  # list price less 5%
    fixed = BOOK.price(event("gpt-4o-mini", at=datetime(2027, 1, 1, tzinfo=UTC), **usage))
    assert fixed.cost_usd == Decimal("0.10") + Decimal("0.40")


def test_alias_maps_an_azure_deployment_name_onto_a_genai_prices_model():
    # Azure's gpt-4o: $2.50 / 1M input, $1.25 cached, $10 output.
    p = BOOK.price(event("prod-4o-eastus", backend="azure", provider="azure_openai", input_tokens=1000,
                         cache_read_input_tokens=200, output_tokens=100))
    assert p.cost_usd == (800 * Decimal("2.50") + 200 * Decimal("1.25") + 100 * Decimal(10)) / M
    assert p.price_source == "genai-prices:azure/gpt-4o"


def test_batch_discount_from_the_overrides_file():
    # claude-opus-4-1 at half price through the batch API: $7.50 / 1M input, $37.50 / 1M output.
    p = BOOK.price(event("claude-opus-4-1", provider="anthropic", api="anthropic.batch", input_tokens=1000,
                         output_tokens=1000))
    assert p.cost_usd == 1000 * (Decimal("7.50") + Decimal("37.50")) / M
    assert "batch -50%" in p.price_source


def test_batch_price_from_genai_prices_when_the_file_has_none():
    # gpt-4o-mini's batch price since 2026-10-14: $0.075 / 1M input, $0.30 / 1M output (then the 5% discount).
    p = PriceBook(CONFIG).price(event("gpt-4o-mini", tags={"batch": "true"}, input_tokens=1_000_000,
                                      output_tokens=1_000_000))
    assert p.cost_usd == Decimal("0.375")
    assert p.price_source == "genai-prices:openai/gpt-4o-mini batch"


def test_batch_without_any_known_batch_price_is_charged_the_standard_rate_and_says_so():
    p = PriceBook(CONFIG).price(event("o3", at=datetime(2026, 1, 1, tzinfo=UTC), api="openai.batch",
                                      input_tokens=1000))
    assert p.cost_usd == 1000 * Decimal(2) / M
    assert "no batch price known" in p.note


def test_the_shipped_overrides_file_is_valid():
    assert load_overrides(DEFAULT_OVERRIDES).version


def test_every_error_is_reported_with_its_line():
    text = """\
version: x
aliases:
  - provider: azure
    price_as: {model: gpt-4o}
prices:
  - provider: acme
    model: a
    inptu: 2
    output: -1
  - provider: acme
    model: b
discounts:
  - provider: openai
    percent: 20
    effective_from: 2026-11-15
  - provider: openai
    percent: 110
    effective_from: 2026-12-01
    effective_to: 2026-11-01
  - provider: openai
    percent: 10
    percent: 15
batch: {provider: openai}
colour: blue
"""
    with pytest.raises(OverridesError) as raised:
        parse_overrides(text, "o.yaml")
    lines = str(raised.value).splitlines()[1:]
    assert [line.strip().split(": ", 1)[0] for line in lines] == [
        "o.yaml:4", "o.yaml:8", "o.yaml:9", "o.yaml:10", "o.yaml:17", "o.yaml:19", "o.yaml:20", "o.yaml:22",
        "o.yaml:23", "o.yaml:24",
    ]
    text_of = "\n".join(lines)
    for expected in ("aliases[0].price_as.provider: Field required", "prices[0].inptu: Extra inputs",
                     "prices[0].output: Input should be greater than or equal to 0", "needs at least one rate",
                     "percent: Input should be less than or equal to 100", "effective_to must be after",
                     "overlaps the one on line 13", "duplicate key (first on line 21)",
                     "batch: must be a list", "colour: unknown key"):
        assert expected in text_of, expected


def test_yaml_syntax_errors_name_their_line():
    with pytest.raises(OverridesError, match=r"o.yaml:3: not valid YAML"):
        parse_overrides("version: x\nprices: [\n", "o.yaml")


def test_numbers_are_read_exactly():
    rule = parse_overrides("prices: [{provider: p, input: 0.100000000001, output: 1e-3}]").prices[0]
    assert rule.input == Decimal("0.100000000001")
    assert rule.output == Decimal("0.001")
