"""Budgets price as the ledger prices: the worst case is PriceBook.price applied to a worst-case usage (overrides,
negotiated and batch discounts, GPU marginal cost), and an emitted event costs what the pricer's batch path
charges for it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from aimeter.budgets.pricing import Costs, Route, Tags, output_cap, worst_usage
from aimeter.budgets.spec import BudgetsConfig
from aimeter.config import ConfigError, parse_config
from aimeter.events import Attribution, Deployment, Status, TokenUsage, UsageEvent, UsageSource
from aimeter.gateway.event_json import encode_usage_event
from aimeter.pricer.overrides_load import parse_overrides
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rows import build_batch
from aimeter.pricer.tariff import charge_of, components_sum

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "http://127.0.0.1:1/v1", deployment: proprietary, provider: openai}
  anthropic: {kind: anthropic, base_url: "http://127.0.0.1:1", deployment: proprietary, provider: anthropic}
  vllm:
    kind: openai_compatible
    base_url: "http://127.0.0.1:2/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {gpu_type: H100, gpu_count: 4, usd_per_node_hour: "3.60", sustained_tokens_per_second: 1000}
models:
  gpt-4o: {backend: openai}
  claude-sonnet-4-5: {backend: anthropic}
  llama: {backend: vllm}
budgets:
  output_limit: 8192
  caps:
    - {name: ml, scope: team, value: ml, usd: "12.50", period: week, timezone: Europe/Paris}
""")
OVERRIDES = parse_overrides("""
discounts:
  - {provider: openai, model: gpt-4o, percent: 20}
batch:
  - {provider: anthropic, percent: 50}
""", "overrides.yaml")
BOOK = PriceBook(CONFIG, OVERRIDES)
AT = datetime(2026, 12, 6, 12, 30, 15, tzinfo=UTC)


def reference(model: str, backend: str, deployment: str, provider: str, usage: TokenUsage, api: str = "openai.chat",
              tags: dict[str, str] | None = None) -> int | None:
    event = UsageEvent(event_id="0193a6f0-0000-7000-8000-000000000001", started_at=AT, ended_at=AT, api=api,
                       backend=backend, provider=provider, deployment=deployment, model_requested=model,
                       status="ok", http_status=200, usage_source="reported", usage=usage,
                       attribution={"team": "ml", "tags": tags or {}})
    return components_sum(charge_of(BOOK.price(event))[0])


@pytest.mark.parametrize(("model", "backend", "deployment", "provider", "api", "tags"), [
    ("gpt-4o", "openai", "proprietary", "openai", "openai.chat", {}),  # list price, -20% negotiated
    ("claude-sonnet-4-5", "anthropic", "proprietary", "anthropic", "anthropic.messages", {"batch": "true"}),
    ("llama", "vllm", "self_hosted", "vllm", "openai.chat", {}),  # GPU marginal cost by throughput
])
def test_worst_case_is_the_ledgers_price_of_the_worst_usage(model: str, backend: str, deployment: str,
                                                            provider: str, api: str, tags: dict[str, str]) -> None:
    body = {"model": model, "max_tokens": 700, "messages": [{"role": "user", "content": "x" * 400}]}
    usage = worst_usage(body, 480, limit=8192)
    assert (usage.input_tokens, usage.output_tokens) == (120, 700)
    route = Route(deployment, backend, provider, model, "", api, Tags(tags), "2026-12-06T12:30:00.000000Z")
    expected = reference(model, backend, deployment, provider, TokenUsage(input_tokens=120, output_tokens=700), api,
                         tags)
    assert expected
    assert Costs(BOOK).worst_case(route, usage) == expected


def test_output_cap_per_api_and_the_model_limit() -> None:
    assert output_cap({}, 8192) == 8192
    assert output_cap({"max_completion_tokens": 50, "max_tokens": 90}, 8192) == 50
    assert output_cap({"max_output_tokens": 10_000}, 8192) == 8192
    assert output_cap({"generationConfig": {"maxOutputTokens": 77}}, 8192) == 77
    assert output_cap({"options": {"num_predict": 12}}, 8192) == 12
    assert output_cap({"max_tokens": True}, 100) == 100  # a bool is no cap
    # Nor is a negative one, in any API's spelling (it would make the reservation negative).
    assert output_cap({"generationConfig": {"maxOutputTokens": -5}, "options": {"num_predict": True}}, 100) == 100
    assert worst_usage({"input": "abc"}, 400, 100, embeddings=True).output_tokens == 0


def test_an_emitted_event_costs_what_the_pricer_charges() -> None:
    payload = encode_usage_event(
        event_id="0193a6f0-0000-7000-8000-00000000000a", gateway_id="gw", started_at=AT, first_token_at=None,
        ended_at=AT, api="openai.chat", backend="openai", provider="openai", deployment=Deployment.PROPRIETARY,
        model_requested="gpt-4o", model_served="gpt-4o-2024-08-06", stream=False, status=Status.OK, http_status=200,
        usage_source=UsageSource.REPORTED,
        usage=TokenUsage(input_tokens=1000, cache_read_input_tokens=200, output_tokens=300),
        backend_compute_seconds=None, attribution=Attribution(team="ml"), usage_problem="", upstream_error_type="",
        usage_flags="", credential_id="", upstream_project="", service_tier="")
    batch = build_batch([payload], BOOK, AT)
    expected = components_sum(batch.charges[0][0])
    event, cost = Costs(BOOK).of_event(payload)
    assert str(event.event_id) == "0193a6f0-0000-7000-8000-00000000000a"
    assert cost == expected
    assert expected


def test_budgets_in_the_config() -> None:
    assert CONFIG.budgets == BudgetsConfig.model_validate(
        {"output_limit": 8192, "caps": [{"name": "ml", "scope": "team", "value": "ml", "usd": "12.50",
                                          "period": "week", "timezone": "Europe/Paris"}]})
    budget = CONFIG.budgets.caps[0].budget()
    assert (budget.amount_usd, budget.hard) == (Decimal("12.50"), True)


@pytest.mark.parametrize(("cap", "fragment"), [
    ('{name: a, scope: team, value: ml, usd: "1", timezone: Mars/Base}', "Mars/Base"),
    ('{name: a, scope: org, value: ml, usd: "1"}', "scope"),
    ('{name: a, scope: team, value: ml, usd: "-1"}', "usd"),
])
def test_bad_budget_config_names_the_field(cap: str, fragment: str) -> None:
    text = ('backends: {openai: {kind: openai, base_url: "http://127.0.0.1:1/v1", deployment: proprietary, '
            'provider: openai}}\nmodels: {gpt-4o: {backend: openai}}\nbudgets: {caps: [' + cap + ']}\n')
    with pytest.raises(ConfigError, match=fragment):
        parse_config(text)
