"""The edges of metering (issue 14, points 3 and 4) end to end: official SDKs -> gateway -> Kafka -> pricer ->
ClickHouse, with the fake upstream replaying each provider's documented shapes.

Each case tags its request and reads its own ``usage_events`` row back, including the diagnosis columns
(``usage_problem``, ``upstream_error_type``, ``usage_flags``).
"""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration

ROW_SQL = """
SELECT status, http_status, usage_source, input_tokens, cache_read_input_tokens, output_tokens,
       reasoning_output_tokens, usage_problem, upstream_error_type, usage_flags, project, user, event_id
FROM usage_events FINAL WHERE tags['case'] = {case:String}
"""
COLUMNS = ("status", "http_status", "source", "input", "cache_read", "output", "reasoning", "problem", "error_type",
           "flags", "project", "user", "event_id")
COST_SQL = "SELECT pricing_status, cost_usd FROM usage_costs FINAL WHERE event_id = {id:UUID}"


def row(clickhouse: Any, case: str) -> dict[str, Any]:
    return dict(zip(COLUMNS, wait_for_row(clickhouse, ROW_SQL, {"case": case})[0], strict=True))


def tagged() -> tuple[str, dict[str, str]]:
    case = uuid.uuid4().hex[:12]
    return case, {"X-Aimeter-Tags": f"case={case}"}


def openai_client(stack: Any, headers: dict[str, str], key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key or key_for(stack, "search", "ranking"),
                         max_retries=0, default_headers=headers)


# --- a. a 200 stream that carries only an error -----------------------------------------------------------------

ERROR_ONLY = "hello fake: prompt=900 completion=300 chunks=5 error_only=1"


def anthropic_error_stream(stack: Any, headers: dict[str, str]) -> None:
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=key_for(stack, "search", "ranking"),
                                 max_retries=0, default_headers=headers)
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for _ in client.messages.create(model="claude-sonnet-4-6", max_tokens=1024, stream=True,
                                        messages=[{"role": "user", "content": ERROR_ONLY}]):
            pass


def gemini_error_stream(stack: Any, headers: dict[str, str]) -> None:
    client = genai.Client(api_key=key_for(stack, "search", "ranking"), http_options=genai_types.HttpOptions(
        base_url=stack.gateway_url, headers=headers, retry_options=genai_types.HttpRetryOptions(attempts=1)))
    with pytest.raises(genai_errors.APIError):
        for _ in client.models.generate_content_stream(model="gemini-2.5-pro", contents=ERROR_ONLY):
            pass
    client.close()


def responses_error_stream(stack: Any, headers: dict[str, str]) -> None:
    events = list(openai_client(stack, headers).responses.create(model="gpt-4o-mini", input=ERROR_ONLY, stream=True))
    assert [event.type for event in events] == ["error"]  # the SDK hands the `error` event to the app


@pytest.mark.parametrize(("call", "error_type"), [
    (anthropic_error_stream, "overloaded_error"),
    (gemini_error_stream, "UNAVAILABLE"),
    (responses_error_stream, "server_error"),
], ids=["anthropic", "gemini", "responses"])
def test_a_stream_carrying_only_an_error_is_not_billed(stack, clickhouse, call, error_type):
    case, headers = tagged()
    call(stack, headers)
    got = row(clickhouse, case)
    assert (got["status"], got["http_status"], got["error_type"]) == ("upstream_error", 200, error_type)
    assert (got["source"], got["input"], got["output"]) == ("none", 0, 0), "no estimate for a refused answer"
    assert error_type in got["problem"]
    status, cost = wait_for_row(clickhouse, COST_SQL, {"id": got["event_id"]})[0]
    assert (status, cost) == ("priced", 0), "nothing billed: a true $0, neither a charge nor 'unmetered'"


def test_an_error_after_message_start_keeps_what_the_provider_reported(stack, clickhouse):
    """Anthropic's message_start already reported the input; the error that follows makes it an upstream error,
    and the counts stay the provider's own (estimated: no message_delta closed them), never a guess of ours."""
    case, headers = tagged()
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=key_for(stack, "search", "ranking"),
                                 max_retries=0, default_headers=headers)
    with pytest.raises(anthropic.APIStatusError):
        for _ in client.messages.create(model="claude-sonnet-4-6", max_tokens=1024, stream=True, messages=[
                {"role": "user", "content": "fake: prompt=900 completion=300 chunks=5 error_after=2"}]):
            pass
    got = row(clickhouse, case)
    assert (got["status"], got["error_type"], got["source"], got["input"]) == (
        "upstream_error", "overloaded_error", "estimated", 900)
    assert "message_delta" in got["problem"]


def test_a_whole_error_answer_says_why(stack, clickhouse):
    case, headers = tagged()
    with pytest.raises(openai.RateLimitError):
        openai_client(stack, headers).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "fake: status=429"}])
    got = row(clickhouse, case)
    assert (got["status"], got["http_status"], got["error_type"]) == ("upstream_error", 429, "rate_limit_exceeded")
    assert "Rate limit reached" in got["problem"]


# --- b. a completed stream is ok --------------------------------------------------------------------------------

def test_a_completed_stream_is_ok_although_the_openai_sdk_hangs_up_at_done(stack, clickhouse):
    """The upstream keeps the response open a little after ``[DONE]`` (``linger_ms``); the openai SDK closes the
    connection as soon as it reads ``[DONE]``. The stream was complete: ``ok``, reported usage."""
    case, headers = tagged()
    stream = openai_client(stack, headers).chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": "hello fake: prompt=70 completion=30 chunks=4 linger_ms=1500"}])
    assert sum(1 for _ in stream) >= 4
    got = row(clickhouse, case)
    assert (got["status"], got["source"], got["input"], got["output"]) == ("ok", "reported", 70, 30)


# --- c. provider-native usage fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_deepseek_cache_hits_are_cache_reads(stack, clickhouse, stream):
    case, headers = tagged()
    answer = openai_client(stack, headers).chat.completions.create(
        model="llama-3.1-70b", stream=stream,
        messages=[{"role": "user", "content": "fake: prompt=1000 completion=50 cached=900 dialect=deepseek"}])
    if stream:
        list(answer)
    got = row(clickhouse, case)
    assert (got["status"], got["source"], got["input"], got["cache_read"], got["output"]) == (
        "ok", "reported", 1000, 900, 50)


def test_xai_reasoning_outside_completion_is_output(stack, clickhouse):
    case, headers = tagged()
    openai_client(stack, headers).chat.completions.create(
        model="llama-3.1-70b",
        messages=[{"role": "user", "content": "fake: prompt=100 completion=300 reasoning=200 dialect=xai"}])
    got = row(clickhouse, case)
    assert (got["source"], got["output"], got["reasoning"]) == ("reported", 300, 200)


# --- e. implausible usage is flagged ----------------------------------------------------------------------------

def test_output_far_above_max_tokens_is_flagged_and_kept(stack, clickhouse):
    case, headers = tagged()
    openai_client(stack, headers).chat.completions.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "fake: prompt=10 completion=5000"}])
    got = row(clickhouse, case)
    assert (got["status"], got["output"], got["flags"]) == ("ok", 5000, "output_over_max_tokens")


# --- f. attribution is never dropped silently -------------------------------------------------------------------

def test_a_header_contradicting_the_keys_project_is_refused_by_name(stack):
    _, headers = tagged()
    client = openai_client(stack, {**headers, "X-Aimeter-Project": "someone-elses"})
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    message = str(refused.value)
    assert "X-Aimeter-Project" in message
    assert "'ranking'" in message
    assert "someone-elses" in message


def test_the_sdks_user_fields_are_kept_faithfully(stack, clickhouse):
    case, headers = tagged()
    openai_client(stack, {**headers, "X-Aimeter-Project": "ranking"}).chat.completions.create(
        model="gpt-4o-mini", user="Doe, Jane", messages=[{"role": "user", "content": "fake: prompt=5 completion=2"}])
    got = row(clickhouse, case)
    assert (got["project"], got["user"]) == ("ranking", "Doe, Jane")

    case, headers = tagged()
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=key_for(stack, "search", "ranking"),
                                 max_retries=0, default_headers=headers)
    client.messages.create(model="claude-sonnet-4-6", max_tokens=64, metadata={"user_id": "tenant:7/José\tQA"},
                           messages=[{"role": "user", "content": "fake: prompt=5 completion=2"}])
    assert row(clickhouse, case)["user"] == "tenant:7/José\\tQA"
