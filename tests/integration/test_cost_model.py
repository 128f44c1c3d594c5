"""Fully loaded self-hosted cost, computed by the real ClickHouse engine (chDB), against hand-computed splits.

The backend: one GPU at $3.60/h sustaining 1,000 tok/s, so an hour holds 3,600,000 tokens and
costs $3.60 ($1 per 1M tokens at full use). Rows are written exactly as the pricer writes them.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from aimeter.config import parse_config
from aimeter.events import UsageEvent
from aimeter.pricer.gpu_periods import sync_gpu_periods
from aimeter.pricer.pricebook import PriceBook
from aimeter.reports.sql import spend_query
from tests.integration.chdb_fixture import ingest

pytestmark = pytest.mark.integration
DAY = datetime(2025, 3, 1, tzinfo=UTC)
DECLARED = DAY - timedelta(days=30)  # when the backend was first declared: before the period it bills
CONFIG_TEXT = """
backends:
  gpu-hand:
    kind: openai_compatible
    base_url: "http://127.0.0.1:9/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {{gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: "{price}", sustained_tokens_per_second: 1000,
          effective_from: 2025-03-01, effective_to: 2025-03-02}}
    reference_model: {{provider: openai, model: gpt-4o}}
  openai-hand: {{kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}}
models:
  llama-hand: {{backend: gpu-hand}}
  gpt-4o: {{backend: openai-hand}}
"""
CONFIG = parse_config(CONFIG_TEXT.format(price="3.60"))
BOOK = PriceBook(CONFIG)
ALLOCATION = """
SELECT hour, team, tokens, cost_usd FROM gpu_cost_allocation(since = {since:DateTime64(3, 'UTC')},
                                                             until = {until:DateTime64(3, 'UTC')})
WHERE backend = 'gpu-hand' ORDER BY hour, team
"""


def hosted(team: str, hour: int, inp: int, out: int, minute: int = 5) -> UsageEvent:
    at = DAY + timedelta(hours=hour, minutes=minute)
    return UsageEvent(event_id=uuid.uuid4(), started_at=at, ended_at=at, api="openai.chat", backend="gpu-hand",
                      provider="vllm", deployment="self_hosted", model_requested="llama-hand", status="ok",
                      http_status=200, usage_source="reported", usage={"input_tokens": inp, "output_tokens": out},
                      attribution={"team": team})


EVENTS = [
    # 10:00 - alpha 1.8M tokens, beta 0.9M: 2.7M of 3.6M used.
    hosted("alpha", 10, 1_000_000, 200_000), hosted("alpha", 10, 500_000, 100_000, minute=40),
    hosted("beta", 10, 600_000, 300_000, minute=59),
    # 12:00 - 4.5M tokens, beyond the declared capacity: no idle, cost split by share.
    hosted("alpha", 12, 2_000_000, 1_000_000), hosted("beta", 12, 1_000_000, 500_000),
    # 13:00 - three tokens: $0.000001 each at $1 per 1M.
    hosted("alpha", 13, 1, 0), hosted("beta", 13, 1, 0), hosted("gamma", 13, 0, 1),
]


@pytest.fixture(scope="module")
def store(metering_store):
    assert sync_gpu_periods(metering_store, CONFIG, now=DECLARED) == 1
    ingest(metering_store, EVENTS, BOOK)
    return metering_store


def allocation(client, since: datetime, until: datetime) -> list[tuple]:
    return client.query(ALLOCATION, parameters={"since": since, "until": until}).result_rows


def test_an_hour_is_split_by_token_share_with_unused_capacity_as_idle(store):
    rows = allocation(store, DAY + timedelta(hours=10), DAY + timedelta(hours=11))
    ten = datetime(2025, 3, 1, 10)  # noqa: DTZ001 - ClickHouse hands UTC back naive
    # $3.60 x 1.8M / 3.6M = $1.80; $3.60 x 0.9M / 3.6M = $0.90; idle $3.60 x (1 - 2.7M / 3.6M) = $0.90.
    assert rows == [(ten, "alpha", 1_800_000, Decimal("1.80")), (ten, "beta", 900_000, Decimal("0.90")),
                    (ten, "idle", 0, Decimal("0.90"))]
    assert sum(r[3] for r in rows) == Decimal("3.60")


def test_hours_nobody_used_are_wholly_idle_and_hours_outside_the_period_cost_nothing(store):
    rows = allocation(store, datetime(2025, 2, 28, 23, tzinfo=UTC), DAY + timedelta(hours=2))
    assert [(r[0].hour, r[1], r[3]) for r in rows] == [(0, "idle", Decimal("3.60")), (1, "idle", Decimal("3.60"))]


def test_an_hour_beyond_capacity_is_split_by_share_with_no_idle(store):
    rows = allocation(store, DAY + timedelta(hours=12), DAY + timedelta(hours=13))
    # 4.5M tokens used: alpha 3M / 4.5M x $3.60 = $2.40, beta 1.5M / 4.5M x $3.60 = $1.20.
    assert [(r[1], r[3]) for r in rows] == [("alpha", Decimal("2.40")), ("beta", Decimal("1.20")),
                                           ("idle", Decimal(0))]


def test_rows_of_an_hour_add_up_exactly_to_its_cost(store):
    rows = allocation(store, DAY + timedelta(hours=13), DAY + timedelta(hours=14))
    assert [(r[1], r[3]) for r in rows] == [("alpha", Decimal("0.000001")), ("beta", Decimal("0.000001")),
                                           ("gamma", Decimal("0.000001")), ("idle", Decimal("3.599997"))]
    full_day = allocation(store, DAY, DAY + timedelta(days=1))
    assert sum(r[3] for r in full_day) == 24 * Decimal("3.60")


def test_redelivered_events_do_not_change_the_split(store):
    before = allocation(store, DAY, DAY + timedelta(days=1))
    ingest(store, EVENTS[:3], BOOK)  # the same events again, as after a Kafka redelivery
    assert allocation(store, DAY, DAY + timedelta(days=1)) == before


def test_a_corrected_past_gpu_price_waits_for_reprice_and_keeps_the_as_charged_version(store, caplog):
    """A config edit of past hours never reaches a report by itself: the pricer logs it as a pending correction;
    syncing as `aimeter reprice --since` does writes a new version, and the as-charged one stays."""
    hour = (DAY + timedelta(hours=10), DAY + timedelta(hours=11))
    as_charged = allocation(store, *hour)
    corrected = parse_config(CONFIG_TEXT.format(price="7.20"))
    with caplog.at_level(logging.WARNING, logger="aimeter.pricer.gpu_periods"):
        assert sync_gpu_periods(store, corrected) == 0
    assert "retroactive correction" in caplog.text
    assert "`aimeter reprice --since 2025-03-01T00:00` applies it" in caplog.text
    assert allocation(store, *hour) == as_charged
    assert sync_gpu_periods(store, corrected, correct_since=DAY) == 1
    assert sync_gpu_periods(store, corrected, correct_since=DAY) == 0
    rows = allocation(store, *hour)
    assert [r[3] for r in rows] == [Decimal("3.60"), Decimal("1.80"), Decimal("1.80")]
    prices = store.query("SELECT usd_per_hour FROM gpu_cost_period_versions FINAL WHERE backend = 'gpu-hand' "
                         "ORDER BY version").result_rows
    assert [p[0] for p in prices[-2:]] == [Decimal("3.60"), Decimal("7.20")]  # as charged, then corrected
    assert sync_gpu_periods(store, CONFIG, correct_since=DAY) == 1  # back, for the other tests
    assert [r[3] for r in allocation(store, *hour)] == [Decimal("1.80"), Decimal("0.90"), Decimal("0.90")]


def test_spend_shows_marginal_fully_loaded_and_savings(store):
    proprietary = UsageEvent(event_id=uuid.uuid4(), started_at=DAY + timedelta(hours=10), ended_at=DAY,
                             api="openai.chat", backend="openai-hand", provider="openai", deployment="proprietary",
                             model_requested="gpt-4o", status="ok", http_status=200, usage_source="reported",
                             usage={"input_tokens": 1_000_000, "output_tokens": 100_000},
                             attribution={"team": "alpha"})
    ingest(store, [proprietary], BOOK)
    sql, params = spend_query("team", DAY + timedelta(hours=10), DAY + timedelta(hours=11))
    result = store.query(sql, parameters=params)
    rows = {r[0]: dict(zip(result.column_names, r, strict=True)) for r in result.result_rows}
    alpha, beta, idle = rows["alpha"], rows["beta"], rows["idle"]
    # Marginal: GPU tokens at $1 per 1M (1.8M -> $1.80) plus gpt-4o's list price (1M in, 100k out -> $3.50).
    assert alpha["cost_usd"] == Decimal("1.80") + Decimal("3.50")
    # Fully loaded: the same here (the hour's share equals the throughput price); idle is billed apart.
    assert (alpha["loaded_cost_usd"], beta["loaded_cost_usd"], idle["loaded_cost_usd"]) == (
        Decimal("5.30"), Decimal("0.90"), Decimal("0.90"))
    # Savings: alpha's 1.5M input + 0.3M output on gpt-4o ($2.50 / $10 per 1M) = $6.75, less its $1.80 of GPU.
    assert alpha["reference_cost_usd"] == Decimal("6.75")
    assert alpha["savings_usd"] == Decimal("6.75") - Decimal("1.80")
    assert idle["savings_usd"] == Decimal("-0.90")  # idle GPUs count against the savings
    assert idle["requests"] == 0
