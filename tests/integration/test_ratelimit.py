"""Rate limits at the gateway, seen by the official SDKs over real HTTP on loopback (SDK -> gateway -> the
project's fake upstream): the x-ratelimit-* / anthropic-ratelimit-* headers on every answer of a limited key,
the 429 in each API's own error shape with retry-after, and tokens per minute reserved before forwarding and
settled to the usage the event records (whole streams and cancelled ones)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import anthropic
import openai
import pytest

from aimeter.config import parse_config
from aimeter.gateway.app import Gateway
from aimeter.gateway.keys import KeyFile, new_key
from tests.support.http_server import serving
from tests.support.publisher_sink import Sink
from tests.support.upstream_thread import fake_upstream_thread

pytestmark = pytest.mark.integration

CONFIG = """
backends:
  openai: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
  anthropic: {{kind: anthropic, base_url: "http://127.0.0.1:{port}", deployment: proprietary, provider: anthropic}}
models:
  gpt-4o-mini: {{backend: openai}}
  text-embedding-3-small: {{backend: openai}}
  claude-sonnet-4-6: {{backend: anthropic}}
rate_limits:
  keys:
    {rpm_key}: {{rpm: 2}}
  teams:
    beta: {{rpm: 1}}
    gamma: {{tpm: 1000}}
    delta: {{tpm: 500}}
    epsilon: {{tpm: 600}}
    eta: {{tpm: 100}}
"""
TEAMS = ("alpha", "beta", "gamma", "delta", "epsilon", "unlimited", "zeta", "eta")


@pytest.fixture(scope="module")
def edge(tmp_path_factory) -> Iterator[tuple[int, Sink, dict[str, str]]]:
    """(gateway port, the events it emitted, team -> the secret of a key of that team)."""
    issued = {team: new_key(team, "", "", datetime.now(UTC)) for team in TEAMS}
    secret, record = issued["zeta"]
    issued["zeta"] = secret, replace(record, limits={"rpm": 1, "tpm": 5000})  # the key store's own limits
    store = KeyFile(tmp_path_factory.mktemp("ratelimit") / "keys.json")
    store.save({record.key_id: record for _, record in issued.values()})
    config = CONFIG.format(port="{port}", rpm_key=issued["alpha"][1].key_id)
    with fake_upstream_thread() as upstream_port:
        sink = Sink()
        gateway = Gateway(parse_config(config.replace("{port}", str(upstream_port))), sink, gateway_id="gw-rl",
                          max_body_bytes=1024 * 1024, upstream_timeout_s=30, keys=store,
                          credentials=lambda _b: "sk-upstream")
        with serving(gateway) as (_, port):
            yield port, sink, {team: secret for team, (secret, _) in issued.items()}


def _openai(port: int, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)


def _chat(client: openai.OpenAI, text: str = "hi", **extra):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **extra)


def _event_tokens(sink: Sink, event_id: str) -> tuple[int, dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for event in sink.events:
            if event["event_id"] == event_id:
                usage = event["usage"]
                return usage["input_tokens"] + usage["output_tokens"], event
        time.sleep(0.02)
    raise AssertionError(f"no event {event_id}")


def test_openai_sdk_reads_the_headers_then_gets_rate_limit_error_with_retry_after(edge):
    port, sink, keys = edge
    client = _openai(port, keys["alpha"])
    first, second = _chat(client), _chat(client)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert [first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]] == [
        "1", "0"]
    assert second.headers["x-ratelimit-reset-requests"].endswith("s")  # Go duration text: "59.99s", "1m0s"
    assert "x-ratelimit-limit-tokens" not in first.headers  # only the limited axis is reported
    forwarded = len(sink.events)
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(client)
    error = refused.value
    assert error.status_code == 429
    assert "rate limit reached for gateway key" in error.message
    assert "2 requests per minute" in error.message
    assert error.code == "rate_limit_exceeded"
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert 0 < int(error.response.headers["retry-after-ms"]) <= 60_000
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    time.sleep(0.2)
    assert len(sink.events) == forwarded  # refused before any upstream call: no event


def test_anthropic_sdk_reads_its_own_headers_and_error_shape(edge):
    port, _, keys = edge
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key=keys["beta"], max_retries=0)
    before = datetime.now(UTC)
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=16,
                                                   messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
    assert 55 <= (reset - before).total_seconds() <= 62  # RFC 3339, a minute after the one admitted request
    assert not any(name.startswith("x-ratelimit-") for name in raw.headers)
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert "team 'beta'" in refused.value.body["error"]["message"]
    assert int(refused.value.response.headers["retry-after"]) >= 1


def test_an_unlimited_key_gets_no_rate_limit_headers(edge):
    port, _, keys = edge
    raw = _chat(_openai(port, keys["unlimited"]))
    assert not any(name.startswith(("x-ratelimit-", "anthropic-ratelimit-")) for name in raw.headers)


def _streamed(client: openai.OpenAI, text: str, max_tokens: int) -> tuple[int, str, list]:
    """(tokens remaining as the answer's headers said, its event id, the chunks), after reading it to the end."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], max_tokens=max_tokens, stream=True)
    chunks = list(raw.parse())
    return int(raw.headers["x-ratelimit-remaining-tokens"]), raw.headers["x-aimeter-event-id"], chunks


def test_a_stream_reserves_its_max_tokens_then_settles_to_its_reported_usage(edge):
    """Two streams reserving 850+ tokens each do not fit in 1,000 tokens per minute together; once the first
    settled to the 70 tokens it used, the second fits, and the headers count exactly that."""
    port, sink, keys = edge
    client = _openai(port, keys["gamma"])
    text = "fake: prompt=40 completion=30 chunks=5"
    remaining, event_id, _ = _streamed(client, text, 850)
    reserved = 1000 - remaining
    assert reserved > 850  # the prompt estimate plus max_tokens
    used, event = _event_tokens(sink, event_id)
    assert (used, event["usage_source"]) == (70, "reported")
    remaining_after, _, _ = _streamed(client, text, 850)
    assert remaining_after == 1000 - used - reserved


def test_a_cancelled_stream_settles_to_what_its_event_records(edge):
    """The client hangs up after two chunks: its event (client_cancelled, tokens estimated) is what stays
    counted, not the 400-token reservation."""
    port, sink, keys = edge
    client = _openai(port, keys["delta"])
    text = "fake: completion=400 chunks=40 gap_ms=50"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], max_tokens=400, stream=True)
    reserved = 500 - int(raw.headers["x-ratelimit-remaining-tokens"])
    stream = raw.parse()
    for _, _chunk in zip(range(2), stream, strict=False):
        pass
    stream.close()
    used, event = _event_tokens(sink, raw.headers["x-aimeter-event-id"])
    assert event["status"] == "client_cancelled"
    assert used < reserved
    remaining, _, _ = _streamed(client, text, 400)  # reserves as much again: fits only once the first settled
    assert remaining == 500 - used - reserved


def test_embeddings_and_the_responses_api_count_through_the_same_path(edge):
    """An embedding reserves its input only (it generates nothing); a Responses API call reserves and settles
    like a chat; both end as their events' tokens."""
    port, sink, keys = edge
    client = _openai(port, keys["epsilon"])
    embedded = client.embeddings.with_raw_response.create(model="text-embedding-3-small",
                                                          input="fake: prompt=25")
    reserved_embedding = 600 - int(embedded.headers["x-ratelimit-remaining-tokens"])
    assert reserved_embedding < 50  # no output reserved
    used_embedding, _ = _event_tokens(sink, embedded.headers["x-aimeter-event-id"])
    response = client.responses.with_raw_response.create(model="gpt-4o-mini", input="fake: prompt=30 completion=10",
                                                         max_output_tokens=500)
    reserved_response = 600 - used_embedding - int(response.headers["x-ratelimit-remaining-tokens"])
    assert reserved_response > 500
    used_response, _ = _event_tokens(sink, response.headers["x-aimeter-event-id"])
    assert used_response == 40
    last = _chat(client, "fake: prompt=5 completion=5", max_tokens=500)
    reserved_last = 600 - used_embedding - used_response - int(last.headers["x-ratelimit-remaining-tokens"])
    assert 500 < reserved_last < 600


def test_a_key_records_own_limits_apply(edge):
    """Limits kept on the key's record in the key store (``limits``), with no line of config for the key."""
    port, _, keys = edge
    client = _openai(port, keys["zeta"])
    first = _chat(client)
    assert (first.headers["x-ratelimit-limit-requests"], first.headers["x-ratelimit-limit-tokens"]) == ("1", "5000")
    with pytest.raises(openai.RateLimitError, match="1 requests per minute"):
        _chat(client)


def test_a_request_that_can_never_fit_is_not_retried_by_the_sdk(edge):
    """Its reservation alone exceeds the team's tokens per minute: the 429 says so, with x-should-retry: false,
    and the openai SDK (2 retries by default) sends it once."""
    port, _, keys = edge
    sent = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [sent.append]})
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=keys["eta"], http_client=http)
    with pytest.raises(openai.RateLimitError, match="can never be admitted"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=500)
    assert len(sent) == 1


BUDGET_CONFIG = """
backends:
  openai: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
models:
  gpt-4o-mini: {{backend: openai}}
rate_limits:
  teams: {{tight: {{rpm: 2}}}}
budgets:
  caps:
    - {{name: tiny, scope: team, value: tight, usd: "0.000001", period: month, enforcement: hard}}
"""


def test_a_request_a_budget_refuses_counts_nothing_against_the_rate_limits():
    """Rate limits admit first, then the budget refuses: that request is not counted (two refusals by the budget
    leave the team's two requests a minute untouched)."""
    from aimeter.budgets.gate import BudgetGate  # noqa: PLC0415 - only this test runs budgets
    from aimeter.budgets.ledger import Ledger  # noqa: PLC0415
    from aimeter.budgets.pricing import Costs  # noqa: PLC0415
    from aimeter.pricer.overrides_load import load_price_book  # noqa: PLC0415

    with fake_upstream_thread() as upstream_port:
        config = parse_config(BUDGET_CONFIG.format(port=upstream_port))
        assert config.budgets is not None
        budgets = BudgetGate(Ledger([spec.budget() for spec in config.budgets.caps]), Costs(load_price_book(config)),
                             config.budgets)
        gateway = Gateway(config, Sink(), gateway_id="gw-rl-budget", max_body_bytes=1024 * 1024,
                          upstream_timeout_s=30, keys=None, credentials=lambda _b: "sk-upstream", budgets=budgets)
        with serving(gateway) as (_, port):
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
                                   default_headers={"X-Aimeter-Team": "tight"})
            for _ in range(3):
                with pytest.raises(openai.RateLimitError, match="tiny"):
                    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            assert len(gateway.rate_gate.limiter.windows["team:tight"].times) == 0
