"""Known usage for February 2026, stored as the pricer stores it, for the dashboard and chargeback tests.

Hand-computed figures (genai-prices list prices; the GPU is $3.60/h for 3.6M tokens/h, i.e. $1 per 1M):

=====  =====  ===========  ============  =========================================  ============  =========
event  team   model        when (UTC)    tokens in / cached / out                   marginal $    reference
=====  =====  ===========  ============  =========================================  ============  =========
E1     alpha  gpt-4o       02-03 09:00   1M / 500k / 250k   1.25 + 0.625 + 2.50     4.375
E8     alpha  gpt-4o       02-03 09:10   upstream_error, no tokens                  0
E9     alpha  mystery      02-03 09:20   1000 / 0 / 500 (stream, unpriced)          NULL
E10    beta   mystery      02-03 10:05   2000 / 0 / 1000 (stream, unpriced)         NULL
E11    beta   gpt-4o       02-03 10:30   timeout, no tokens                         0
E3     alpha  llama-dash   02-10 10:30   1.5M / 0 / 300k                            1.80          6.75
E4     beta   llama-dash   02-10 10:45   600k / 0 / 300k                            0.90          4.50
E2     beta   gpt-4o-mini  02-15 12:00   1M / 0 / 1M        0.15 + 0.60             0.75
E5     beta   mystery      02-20 08:00   10 / 0 / 10 (unpriced)                     NULL
E6     alpha  gpt-4o-mini  02-28 23:59:59.500  1M / 0 / 1M (the month's last second)  0.75
=====  =====  ===========  ============  =========================================  ============  =========

Plus one event just before and one just after the month (never counted). GPU hours: 2026-02-10 10:00
(2.7M of 3.6M tokens used: alpha $1.80, beta $0.90, idle $0.90) and 11:00 (unused: idle $3.60).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from aimeter.config import parse_config
from aimeter.events import UsageEvent
from aimeter.pricer.gpu_periods import sync_gpu_periods
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, build_batch
from tests.support.pricer_rows import cost_rows, event_rows

MONTH = "2026-02"
SINCE, UNTIL = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = parse_config("""
backends:
  openai-dash: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  gpu-dash:
    kind: openai_compatible
    base_url: "http://127.0.0.1:9/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: "3.60", sustained_tokens_per_second: 1000,
          effective_from: "2026-02-10T10:00:00Z", effective_to: "2026-02-10T12:00:00Z"}
    reference_model: {provider: openai, model: gpt-4o}
models:
  gpt-4o: {backend: openai-dash}
  gpt-4o-mini: {backend: openai-dash}
  mystery-dash: {backend: openai-dash}
  llama-dash: {backend: gpu-dash}
""")
BOOK = PriceBook(CONFIG)


@dataclass(frozen=True)
class Call:
    """One attempt: who, what, when, how long, and the seconds from its end to its ClickHouse row."""

    name: str
    team: str
    project: str
    model: str
    at: datetime
    usage: dict[str, int]
    ms: int = 1000
    status: str = "ok"
    http_status: int = 200
    ttft_ms: int | None = None
    lag_s: Decimal = Decimal(1)


def _at(day: int, hour: int, minute: int, second: int = 0, ms: int = 0) -> datetime:
    return datetime(2026, 2, day, hour, minute, second, ms * 1000, tzinfo=UTC)


def tokens(inp: int, out: int, cached: int = 0) -> dict[str, int]:
    return {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cached}


CALLS = [
    Call("E1", "alpha", "proj-a", "gpt-4o", _at(3, 9, 0), tokens(1_000_000, 250_000, 500_000), ms=2000,
         lag_s=Decimal("1.5")),
    Call("E8", "alpha", "proj-a", "gpt-4o", _at(3, 9, 10), {}, ms=500, status="upstream_error", http_status=500,
         lag_s=Decimal("0.5")),
    Call("E9", "alpha", "proj-a", "mystery-dash", _at(3, 9, 20), tokens(1000, 500), ttft_ms=300, lag_s=Decimal("2.5")),
    Call("E10", "beta", "proj-b", "mystery-dash", _at(3, 10, 5), tokens(2000, 1000), ms=3000, ttft_ms=700),
    Call("E11", "beta", "proj-b", "gpt-4o", _at(3, 10, 30), {}, ms=10_000, status="timeout", http_status=504,
         lag_s=Decimal("0.5")),
    Call("E3", "alpha", "proj-a", "llama-dash", _at(10, 10, 30), tokens(1_500_000, 300_000)),
    Call("E4", "beta", "proj-b", "llama-dash", _at(10, 10, 45), tokens(600_000, 300_000)),
    Call("E2", "beta", "proj-b", "gpt-4o-mini", _at(15, 12, 0), tokens(1_000_000, 1_000_000)),
    Call("E5", "beta", "proj-b", "mystery-dash", _at(20, 8, 0), tokens(10, 10)),
    Call("E6", "alpha", "proj-c", "gpt-4o-mini", _at(28, 23, 59, 59, 500), tokens(1_000_000, 1_000_000), ms=100),
    Call("before", "alpha", "proj-a", "gpt-4o-mini", SINCE - timedelta(milliseconds=1), tokens(1_000_000, 0), ms=0),
    Call("after", "alpha", "proj-a", "gpt-4o-mini", UNTIL, tokens(1_000_000, 0)),
]
KEYS = {"alpha": {"proj-c": "k-a2"}, "beta": {}}


def event(call: Call) -> UsageEvent:
    backend, provider, deployment = (("gpu-dash", "vllm", "self_hosted") if call.model == "llama-dash"
                                     else ("openai-dash", "openai", "proprietary"))
    ended = call.at + timedelta(milliseconds=call.ms)
    first = call.at + timedelta(milliseconds=call.ttft_ms) if call.ttft_ms is not None else None
    key = KEYS[call.team].get(call.project, "k-a1" if call.team == "alpha" else "k-b1")
    return UsageEvent(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"aimeter-dashboards-test/{call.name}"), started_at=call.at,
        first_token_at=first, ended_at=ended, api="openai.chat", backend=backend, provider=provider,
        deployment=deployment, model_requested=call.model, stream=call.ttft_ms is not None, status=call.status,
        http_status=call.http_status, usage_source="reported" if call.usage else "none", usage=call.usage,
        attribution={"team": call.team, "project": call.project, "user": "u1" if call.team == "alpha" else "u2",
                     "api_key_id": key})


def seed(client: Client) -> None:
    """Store the calls as the pricer would, but with each row's ``ingested_at`` set (for the lag panel).
    Event ids are fixed, so seeding again (from another test module) only adds duplicates FINAL collapses."""
    sync_gpu_periods(client, CONFIG, now=SINCE)  # declared before the month it bills
    batch = build_batch([event(c).model_dump_json().encode() for c in CALLS], BOOK, datetime(2026, 3, 2, tzinfo=UTC))
    assert not batch.poison, batch.poison
    rows = [[*row, row[EVENT_COLUMNS.index("ended_at")] + timedelta(seconds=float(c.lag_s))]
            for row, c in zip(event_rows(batch), CALLS, strict=True)]
    client.insert("usage_events", rows, column_names=[*EVENT_COLUMNS, "ingested_at"])
    client.insert("usage_costs", cost_rows(batch), column_names=COST_COLUMNS)


D = Decimal
# `aimeter chargeback --month 2026-02 --by team`, by hand (see the table above).
EXPECTED_BY_TEAM = {
    "alpha": {"requests": 5, "input_tokens": 3_501_000, "cache_read_tokens": 500_000, "cache_write_tokens": 0,
              "output_tokens": 1_550_500, "reasoning_tokens": 0, "cost_usd": D("6.925"),
              "loaded_cost_usd": D("6.925"), "proprietary_cost_usd": D("5.125"), "self_hosted_cost_usd": D("1.80"),
              "reference_cost_usd": D("6.75"), "savings_usd": D("4.95"), "unpriced_requests": 1},
    "beta": {"requests": 5, "input_tokens": 1_602_010, "cache_read_tokens": 0, "cache_write_tokens": 0,
             "output_tokens": 1_301_010, "reasoning_tokens": 0, "cost_usd": D("1.65"), "loaded_cost_usd": D("1.65"),
             "proprietary_cost_usd": D("0.75"), "self_hosted_cost_usd": D("0.90"), "reference_cost_usd": D("4.50"),
             "savings_usd": D("3.60"), "unpriced_requests": 2},
    "idle": {"requests": 0, "input_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0, "output_tokens": 0,
             "reasoning_tokens": 0, "cost_usd": None, "loaded_cost_usd": D("4.50"), "proprietary_cost_usd": D(0),
             "self_hosted_cost_usd": D("4.50"), "reference_cost_usd": D(0), "savings_usd": D("-4.50"),
             "unpriced_requests": 0},
}
EXPECTED_TOTAL = {"requests": 10, "input_tokens": 5_103_010, "cache_read_tokens": 500_000, "cache_write_tokens": 0,
                  "output_tokens": 2_851_510, "reasoning_tokens": 0, "cost_usd": D("8.575"),
                  "loaded_cost_usd": D("13.075"), "proprietary_cost_usd": D("5.875"),
                  "self_hosted_cost_usd": D("7.20"), "reference_cost_usd": D("11.25"), "savings_usd": D("4.05"),
                  "unpriced_requests": 3}
