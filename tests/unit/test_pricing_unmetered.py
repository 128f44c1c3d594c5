"""Never a silent $0 (issue 14.2): a 2xx answer whose usage could not be read is `unmetered`, with no cost, on
both pricing paths; the pricer says so once per model per hour; a route can say what it is priced as."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from aimeter.config import load_config, parse_config
from aimeter.events import TokenUsage, UsageEvent
from aimeter.pricer.alerts import NotPricedLog
from aimeter.pricer.pricebook import PRICED, UNMETERED, UNPRICED, PriceBook
from aimeter.pricer.rows import build_batch
from tests.support.pricer_rows import cost_rows

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  azure: {kind: azure_openai, base_url: "https://r.openai.azure.com", deployment: proprietary, provider: azure}
  vllm:
    kind: openai_compatible
    base_url: "http://127.0.0.1:8000/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: "3.60", sustained_tokens_per_second: 1000}
models:
  gpt-4o: {backend: openai}
  gpt-4o-prod: {backend: azure, priced_as: {provider: openai, model: gpt-4o}}
  gpt-4o-unmapped: {backend: azure}
  llama: {backend: vllm}
""")
BOOK = PriceBook(CONFIG)
AT = datetime(2026, 11, 15, 12, tzinfo=UTC)


def event(model: str = "gpt-4o", backend: str = "openai", provider: str = "openai", *, source: str = "none",
          http_status: int = 200, status: str = "ok", deployment: str = "proprietary", **usage: int) -> UsageEvent:
    return UsageEvent(event_id="0193a6f0-0000-7000-8000-000000000002", started_at=AT, ended_at=AT,
                      api="openai.chat", backend=backend, provider=provider, deployment=deployment,
                      model_requested=model, status=status, http_status=http_status, usage_source=source,
                      usage=TokenUsage(**usage), attribution={"team": "search"})


def both_paths(e: UsageEvent) -> list[tuple]:
    """(status, amounts) from the fast path and from the reference path."""
    out = []
    for fast in (True, False):
        batch = build_batch([e.model_dump_json().encode()], BOOK, AT, fast=fast)
        row = cost_rows(batch)[0]
        out.append((row[23], row[19]))  # pricing_status, cost_usd
    return out


def test_a_2xx_answer_without_readable_usage_is_unmetered_never_zero():
    p = BOOK.price(event())
    assert (p.pricing_status, p.cost_usd, p.components) == (UNMETERED, None, None)
    assert "usage_source=none" in p.note
    assert both_paths(event()) == [(UNMETERED, None), (UNMETERED, None)]
    hosted = event("llama", "vllm", "vllm", deployment="self_hosted")
    assert both_paths(hosted) == [(UNMETERED, None), (UNMETERED, None)]


def test_a_failed_attempt_with_no_usage_is_a_true_zero_and_read_usage_is_priced():
    failed = event(http_status=500, status="upstream_error")
    assert (BOOK.price(failed).pricing_status, BOOK.price(failed).cost_usd) == (PRICED, Decimal(0))
    estimated = event(source="estimated", input_tokens=1000)
    assert BOOK.price(estimated).pricing_status == PRICED
    assert both_paths(failed) == [(PRICED, Decimal(0))] * 2


def test_a_route_priced_as_another_model_is_priced_out_of_the_box():
    """The README's Azure deployment `gpt-4o-prod`: unpriced before, priced as openai/gpt-4o now."""
    usage = {"input_tokens": 1_000_000, "output_tokens": 100_000}
    prod = event("gpt-4o-prod", "azure", "azure", source="reported", **usage)
    direct = event("gpt-4o", source="reported", **usage)
    assert BOOK.price(prod).cost_usd == BOOK.price(direct).cost_usd == Decimal("3.5")
    assert both_paths(prod) == [(PRICED, Decimal("3.5"))] * 2
    unmapped = event("gpt-4o-unmapped", "azure", "azure", source="reported", **usage)
    assert BOOK.price(unmapped).pricing_status == UNPRICED


def test_unpriced_and_unmetered_are_logged_once_per_model_per_hour(caplog):
    clock = [AT]
    alerts = NotPricedLog(clock=lambda: clock[0])
    values = [e.model_dump_json().encode() for e in (
        event(), event(), event("gpt-4o-unmapped", "azure", "azure", source="reported", input_tokens=5),
        event(source="reported", input_tokens=5))]
    batch = build_batch(values, BOOK, AT)
    with caplog.at_level(logging.WARNING, logger="aimeter.pricer"):
        assert alerts.note_batch(batch.events, batch.charges) == 2
        assert alerts.note_batch(batch.events, batch.charges) == 0  # same hour: quiet
        clock[0] = AT + timedelta(hours=1)
        assert alerts.note_batch(batch.events, batch.charges) == 2
    unmetered, unpriced = sorted((r.getMessage() for r in caplog.records[:2]), key=lambda m: "unpriced" in m)
    assert "2 2xx answer(s) from openai/gpt-4o (backend openai) stored unmetered" in unmetered
    assert "stream_options.include_usage" in unmetered
    assert "azure/gpt-4o-unmapped" in unpriced
    assert "priced_as" in unpriced
    assert "aimeter reprice" in unpriced


def test_the_example_configs_azure_deployment_is_priced_out_of_the_box():
    example = load_config(Path(__file__).resolve().parents[2] / "examples" / "aimeter.example.yaml")
    prod = event("gpt-4o-prod", "azure", "azure", source="reported", input_tokens=1_000_000, output_tokens=100_000)
    priced = PriceBook(example).price(prod)
    assert (priced.pricing_status, priced.cost_usd, priced.price_source) == (
        PRICED, Decimal("3.5"), "genai-prices:openai/gpt-4o")
