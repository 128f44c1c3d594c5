"""The fake upstream's Anthropic, Gemini and Ollama APIs, driven as apps would drive them.

Anthropic and Google (google-genai) SDK clients talk to the fake over real HTTP; Ollama (no official
Python SDK in the venv) over aiohttp. Each API is also round-tripped: the fake's raw bytes, read by
the gateway's own usage mapping, must give back the directive's numbers in normalized semantics.
That pins both sides: the fake speaks each provider's semantics, and the gateway undoes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import orjson
import pytest
import pytest_asyncio
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.providers.anthropic import AnthropicStream, from_anthropic_body
from aimeter.gateway.providers.gemini import GeminiStream, from_gemini_body
from aimeter.gateway.providers.ollama import OllamaStream, from_ollama_body
from tests.fixtures.fake_upstream import (
    CACHING,
    EXPECTED,
    base_url,
    on_session_loop,
    post,
    post_cut,
    scanned,
    user,
)

__all__ = ["base_url"]  # the fixture, imported so pytest finds it

# google-genai subclasses aiohttp.ClientSession, which aiohttp itself warns about; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

CLAUDE, GEMINI, LLAMA = "claude-sonnet-4-6", "gemini-2.5-flash", "llama3.2"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def claude(base_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0)
    yield client
    await client.close()


@pytest.fixture(scope="module")
def gem(base_url: str) -> genai.Client:
    options = genai_types.HttpOptions(base_url=base_url, retry_options=genai_types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key="x", http_options=options)


# ---- Anthropic ---------------------------------------------------------------------------------


@on_session_loop
async def test_anthropic_reports_its_own_semantics_and_the_sdk_parses_the_split(
    claude: anthropic.AsyncAnthropic, base_url: str
) -> None:
    msg = await claude.messages.create(model=CLAUDE, max_tokens=100, messages=user(f"hi {CACHING}"))
    usage = msg.usage
    assert usage.input_tokens == 1000 - 200 - 150  # Anthropic's input_tokens excludes cache reads and writes
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (200, 150)
    assert usage.cache_creation is not None
    assert (usage.cache_creation.ephemeral_5m_input_tokens, usage.cache_creation.ephemeral_1h_input_tokens) == (100, 50)
    assert usage.output_tokens_details is not None
    assert (usage.output_tokens, usage.output_tokens_details.thinking_tokens) == (40, 10)
    assert (msg.type, msg.role, msg.stop_reason, msg.model) == ("message", "assistant", "end_turn", CLAUDE)
    assert msg.content[0].type == "text"
    _, headers, raw = await post(f"{base_url}/v1/messages", {"model": CLAUDE, "max_tokens": 100,
                                                               "messages": user(CACHING)})
    assert headers["request-id"].startswith("req_")
    assert from_anthropic_body(orjson.loads(raw)).usage == EXPECTED


@on_session_loop
async def test_brief_example_prompt_means_the_normalized_total(claude: anthropic.AsyncAnthropic) -> None:
    msg = await claude.messages.create(model=CLAUDE, max_tokens=9,
                                       messages=user("fake: prompt=1000 cached=200 cache_write_5m=100"))
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (
        700, 200, 100)
    assert (msg.usage.output_tokens, msg.stop_reason) == (9, "max_tokens")


@on_session_loop
async def test_anthropic_stream_events_in_documented_order(claude: anthropic.AsyncAnthropic, base_url: str) -> None:
    documented = ["message_start", "content_block_start", "ping", *["content_block_delta"] * 4,
                  "content_block_stop", "message_delta", "message_stop"]
    body = {"model": CLAUDE, "max_tokens": 100, "messages": user(f"{CACHING} chunks=4"), "stream": True}
    raw = (await post(f"{base_url}/v1/messages", body))[2]
    assert [line[len(b"event: "):].decode() for line in raw.splitlines() if line.startswith(b"event: ")] == documented
    stream = await claude.messages.create(model=CLAUDE, max_tokens=100, messages=user(f"{CACHING} chunks=4"),
                                          stream=True)
    assert [event.type async for event in stream] == [k for k in documented if k != "ping"]  # the SDK drops pings


@on_session_loop
async def test_anthropic_stream_helper_accumulates_usage(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(model=CLAUDE, max_tokens=100, messages=user(f"{CACHING} chunks=5")) as stream:
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    whole = await claude.messages.create(model=CLAUDE, max_tokens=100, messages=user(f"{CACHING} chunks=5"))
    assert text == whole.content[0].text  # type: ignore[union-attr]
    usage = final.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (650, 200, 150)
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_1h_input_tokens == 50
    assert usage.output_tokens == 40


@on_session_loop
async def test_anthropic_raw_stream_through_the_gateway_reader(base_url: str) -> None:
    body = {"model": CLAUDE, "max_tokens": 100, "messages": user(CACHING), "stream": True}
    status, headers, raw = await post(f"{base_url}/v1/messages", body)
    assert (status, headers["Content-Type"]) == (200, "text/event-stream; charset=utf-8")
    reader = AnthropicStream()
    got = scanned(reader, raw)
    assert (got.source, got.usage) == (UsageSource.REPORTED, EXPECTED)
    assert reader.complete


@on_session_loop
@pytest.mark.parametrize(("status", "exc_type", "err_type"), [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (403, anthropic.PermissionDeniedError, "permission_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
])
async def test_anthropic_status_directive_raises_the_matching_sdk_error(
    claude: anthropic.AsyncAnthropic, status: int, exc_type: type[anthropic.APIStatusError], err_type: str
) -> None:
    with pytest.raises(exc_type) as caught:
        await claude.messages.create(model=CLAUDE, max_tokens=5, messages=user(f"fake: status={status}"))
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == err_type
    assert body["request_id"].startswith("req_")


@on_session_loop
async def test_anthropic_requires_max_tokens(claude: anthropic.AsyncAnthropic, base_url: str) -> None:
    status, _, raw = await post(f"{base_url}/v1/messages", {"model": CLAUDE, "messages": user("hi")})
    assert status == 400
    assert orjson.loads(raw)["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}


@on_session_loop
async def test_anthropic_in_stream_error_and_dropped_stream(claude: anthropic.AsyncAnthropic, base_url: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with claude.messages.stream(model=CLAUDE, max_tokens=100,
                                          messages=user("fake: chunks=5 error_after=2")) as stream:
            await stream.get_final_message()
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"
    body = {"model": CLAUDE, "max_tokens": 100, "messages": user("fake: prompt=90 chunks=5 drop=2"), "stream": True}
    reader = AnthropicStream()
    got = scanned(reader, await post_cut(f"{base_url}/v1/messages", body))
    assert (got.source, got.usage.input_tokens, reader.complete) == (UsageSource.ESTIMATED, 90, False)


# ---- Gemini ------------------------------------------------------------------------------------


@on_session_loop
async def test_gemini_usage_in_gemini_semantics(gem: genai.Client, base_url: str) -> None:
    resp = await gem.aio.models.generate_content(model=GEMINI, contents=f"hi {CACHING}")
    meta = resp.usage_metadata
    assert meta is not None
    assert (meta.prompt_token_count, meta.cached_content_token_count) == (1000, 200)  # cached inside prompt
    assert (meta.candidates_token_count, meta.thoughts_token_count) == (30, 10)  # thoughts outside candidates
    assert meta.total_token_count == 1040
    assert resp.candidates is not None
    assert resp.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert (resp.model_version, (resp.text or "")[:9]) == (GEMINI, "tok0 tok1")
    raw = (await post(f"{base_url}/v1beta/models/{GEMINI}:generateContent",
                      {"contents": [{"role": "user", "parts": [{"text": CACHING}]}]}))[2]
    # Gemini reports no cache writes, so only those are missing from the normalized usage.
    assert from_gemini_body(orjson.loads(raw)).usage == EXPECTED.model_copy(
        update={"cache_creation_input_tokens": 0, "cache_creation_5m_input_tokens": 0,
                "cache_creation_1h_input_tokens": 0})


@on_session_loop
async def test_gemini_sse_stream_running_usage(gem: genai.Client, base_url: str) -> None:
    directive = "fake: prompt=300 completion=60 thoughts=20 chunks=4"
    chunks = [c async for c in await gem.aio.models.generate_content_stream(model=GEMINI, contents=directive)]
    assert len(chunks) == 4
    counts = [c.usage_metadata.candidates_token_count for c in chunks if c.usage_metadata]
    assert counts == sorted(counts)
    assert counts[-1] == 40
    assert chunks[-1].candidates is not None
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    url = f"{base_url}/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse"
    status, headers, raw = await post(url, {"contents": [{"parts": [{"text": directive}]}]})
    assert (status, headers["Content-Type"]) == (200, "text/event-stream; charset=utf-8")
    reader = GeminiStream()
    got = scanned(reader, raw)
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.REPORTED, 300, 60)
    assert (got.usage.reasoning_output_tokens, reader.complete) == (20, True)


@on_session_loop
async def test_gemini_stream_without_alt_is_one_json_array(base_url: str) -> None:
    url = f"{base_url}/v1/models/{GEMINI}:streamGenerateContent"
    status, headers, raw = await post(url, {"contents": [{"parts": [{"text": "fake: prompt=9 chunks=3"}]}]})
    assert (status, headers["Content-Type"]) == (200, "application/json")
    chunks = orjson.loads(raw)
    assert isinstance(chunks, list)
    assert len(chunks) == 3
    got = from_gemini_body(chunks)
    assert (got.usage.input_tokens, got.usage.output_tokens) == (9, 16)


@on_session_loop
@pytest.mark.parametrize(("status", "exc_type", "name"), [
    (400, genai_errors.ClientError, "INVALID_ARGUMENT"),
    (404, genai_errors.ClientError, "NOT_FOUND"),
    (429, genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
    (500, genai_errors.ServerError, "INTERNAL"),
    (503, genai_errors.ServerError, "UNAVAILABLE"),
])
async def test_gemini_status_directive_raises_the_sdk_error(
    gem: genai.Client, status: int, exc_type: type[genai_errors.APIError], name: str
) -> None:
    with pytest.raises(exc_type) as caught:
        await gem.aio.models.generate_content(model=GEMINI, contents=f"fake: status={status}")
    assert (caught.value.code, caught.value.status) == (status, name)


@on_session_loop
async def test_gemini_bad_request_and_in_stream_error(base_url: str) -> None:
    status, _, raw = await post(f"{base_url}/v1beta/models/{GEMINI}:generateContent", {"contents": []})
    assert (status, orjson.loads(raw)["error"]["status"]) == (400, "INVALID_ARGUMENT")
    url = f"{base_url}/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse"
    raw = (await post(url, {"contents": [{"parts": [{"text": "fake: prompt=9 chunks=4 error_after=2"}]}]}))[2]
    reader = GeminiStream()
    got = scanned(reader, raw)
    assert "UNAVAILABLE" in got.problem
    assert (got.source, got.usage.input_tokens, reader.complete) == (UsageSource.ESTIMATED, 9, False)


# ---- Ollama ------------------------------------------------------------------------------------


@on_session_loop
async def test_ollama_chat_streams_ndjson_by_default(base_url: str) -> None:
    body = {"model": LLAMA, "messages": user("fake: prompt=1000 cached=200 completion=50 chunks=3")}
    status, headers, raw = await post(f"{base_url}/api/chat", body)
    assert (status, headers["Content-Type"]) == (200, "application/x-ndjson")
    lines = [orjson.loads(line) for line in raw.splitlines()]
    assert [line["done"] for line in lines] == [False, False, False, True]
    final = lines[-1]
    assert (final["prompt_eval_count"], final["prompt_eval_cached_count"], final["eval_count"]) == (1000, 200, 50)
    assert final["done_reason"] == "stop"
    assert final["total_duration"] > final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    reader = OllamaStream()
    got = scanned(reader, raw, ndjson=True)
    assert got.usage == TokenUsage(input_tokens=1000, cache_read_input_tokens=200, output_tokens=50)
    assert got.compute_seconds == pytest.approx(1.2)  # 800 uncached * 0.25 ms + 50 * 20 ms; load excluded
    assert reader.complete


@on_session_loop
async def test_ollama_stream_false_and_generate(base_url: str) -> None:
    status, headers, raw = await post(f"{base_url}/api/chat", {"model": LLAMA, "messages": user("a b"),
                                                                "stream": False})
    assert (status, headers["Content-Type"]) == (200, "application/json")
    whole = orjson.loads(raw)
    assert (whole["done"], whole["message"]["role"], whole["prompt_eval_count"]) == (True, "assistant", 4 + 2)
    assert from_ollama_body(whole).usage.output_tokens == 16
    generated = orjson.loads((await post(f"{base_url}/api/generate", {"model": LLAMA, "prompt": "why is the sky blue",
                                                                      "stream": False,
                                                                      "options": {"num_predict": 8}}))[2])
    assert (generated["prompt_eval_count"], generated["eval_count"], generated["done_reason"]) == (5, 8, "length")
    assert isinstance(generated["response"], str)
    assert "context" in generated
    streamed = (await post(f"{base_url}/api/generate", {"model": LLAMA, "prompt": "fake: chunks=2"}))[2]
    assert [orjson.loads(line).get("response") is not None for line in streamed.splitlines()] == [True] * 3


@on_session_loop
async def test_ollama_errors(base_url: str) -> None:
    status, _, raw = await post(f"{base_url}/api/chat", {"model": "llama9", "messages": user("fake: status=404")})
    assert (status, orjson.loads(raw)) == (404, {"error": 'model "llama9" not found, try pulling it first'})
    status, _, raw = await post(f"{base_url}/api/chat", {"messages": user("hi")})
    assert status == 400
    assert isinstance(orjson.loads(raw)["error"], str)
    raw = (await post(f"{base_url}/api/chat", {"model": LLAMA, "messages": user("fake: chunks=4 error_after=1")}))[2]
    assert orjson.loads(raw.splitlines()[-1]) == {"error": "an error was encountered while running the model: "
                                                           "unexpected EOF"}
    reader = OllamaStream()
    scanned(reader, raw, ndjson=True)
    assert "error was encountered" in reader.result().problem
    assert not reader.complete
