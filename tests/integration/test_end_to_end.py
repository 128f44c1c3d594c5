"""openai SDK -> gateway -> fake upstream; gateway -> real Kafka -> pricer -> ClickHouse (chDB).

Expected costs are hand-computed from published list prices, not taken from the code under test.
"""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration
M = Decimal(1_000_000)

ROW_SQL = """
SELECT team, project, model, deployment, input_tokens, cache_read_input_tokens, output_tokens,
       cost_usd, reference_cost_usd, pricing_status, status
FROM usage_costs FINAL WHERE event_id = {id:UUID}
"""


def client_for(stack, team: str, project: str) -> openai.OpenAI:
    """An app's client: only the base URL and the gateway-issued key differ from calling OpenAI directly."""
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key_for(stack, team, project), max_retries=0)


def test_proprietary_request_is_metered_and_priced(stack, clickhouse):
    client = client_for(stack, "search", "ranking")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello fake: prompt=1200 completion=300 cached=200"}],
    )
    completion = raw.parse()
    assert completion.usage.prompt_tokens == 1200  # the SDK got the upstream's answer unchanged
    event_id = raw.headers["x-aimeter-event-id"]

    row = wait_for_row(clickhouse, ROW_SQL, {"id": event_id})[0]
    team, project, model, deployment, inp, cached, out, cost, ref, pricing, status = row
    assert (team, project, model, deployment, status) == ("search", "ranking", "gpt-4o-mini", "proprietary", "ok")
    assert (inp, cached, out) == (1200, 200, 300)
    # gpt-4o-mini list price: $0.15 / 1M input, $0.075 / 1M cached input, $0.60 / 1M output.
    assert cost == (1000 * Decimal("0.15") + 200 * Decimal("0.075") + 300 * Decimal("0.60")) / M
    assert pricing == "priced"
    assert ref is None


def test_self_hosted_request_is_priced_from_gpu_cost(stack, clickhouse):
    client = client_for(stack, "research", "evals")
    raw = client.chat.completions.with_raw_response.create(
        model="llama-3.1-70b", messages=[{"role": "user", "content": "fake: prompt=3000 completion=1500"}],
    )
    raw.parse()
    row = wait_for_row(clickhouse, ROW_SQL, {"id": raw.headers["x-aimeter-event-id"]})[0]
    team, _, model, deployment, inp, _, out, cost, ref, pricing, _ = row
    assert (team, deployment, inp, out, pricing) == ("research", "self_hosted", 3000, 1500, "priced")
    assert model == "meta-llama/Llama-3.1-70B-Instruct"  # the served model, after the alias
    # 2 x H100 at $2.50/h, 2,500 tok/s sustained: $5 per 9,000,000 tokens; 4,500 tokens = $0.0025.
    assert cost == Decimal("0.0025")
    # Same tokens on gpt-4o ($2.50 in / $10 out per 1M): the savings basis.
    assert ref == (3000 * Decimal("2.50") + 1500 * Decimal("10")) / M


def test_streamed_request_is_metered_and_client_sees_no_injected_usage(stack, clickhouse):
    client = client_for(stack, "support", "helpdesk-bot")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", stream=True,
        messages=[{"role": "user", "content": "fake: prompt=500 completion=40 chunks=10"}],
    )
    event_id = raw.headers["x-aimeter-event-id"]
    chunks = list(raw.parse())
    assert chunks, "stream was empty"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk we injected must not reach the client"
    row = wait_for_row(clickhouse, ROW_SQL, {"id": event_id})[0]
    assert row[4:7] == (500, 0, 40)
    assert row[7] == (500 * Decimal("2.50") + 40 * Decimal("10")) / M


def test_unknown_model_gets_openai_shaped_404(stack):
    client = client_for(stack, "search", "ranking")
    with pytest.raises(openai.NotFoundError, match="not-a-model"):
        client.chat.completions.create(model="not-a-model", messages=[{"role": "user", "content": "hi"}])


def test_upstream_error_is_returned_and_metered(stack, clickhouse):
    client = client_for(stack, "search", "ranking")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "fake: status=500"}])
    event_id = caught.value.response.headers["x-aimeter-event-id"]
    row = wait_for_row(clickhouse, ROW_SQL, {"id": event_id})[0]
    assert row[10] == "upstream_error"
