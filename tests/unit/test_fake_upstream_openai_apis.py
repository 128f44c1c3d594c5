"""The fake upstream's OpenAI Responses, Embeddings and legacy Completions, plus llama.cpp timings.

The official ``openai`` SDK is the client; each API is also round-tripped through the gateway's own
usage mapping. The pure part of the shared directive grammar and of each API's request reader is
tested here too.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator

import openai
import orjson
import pytest
import pytest_asyncio

from aimeter.events import TokenUsage, UsageSource
from aimeter.fake_upstream.bodies import (
    Call,
    RequestError,
    read_anthropic,
    read_embeddings,
    read_gemini,
    read_ollama_chat,
    read_ollama_generate,
    read_responses,
)
from aimeter.fake_upstream.plan import parse_directive, plan_for
from aimeter.gateway.providers.openai import (
    OpenAIChatStream,
    OpenAICompletionsStream,
    ResponsesStream,
    from_completions_body,
    from_embeddings_body,
    from_openai_body,
    from_responses_body,
)
from tests.fixtures.fake_upstream import CACHING, EXPECTED, base_url, on_session_loop, post, scanned, user

__all__ = ["base_url"]  # the fixture, imported so pytest finds it

CLAUDE, GPT, GEMINI, LLAMA = "claude-sonnet-4-6", "gpt-5-mini", "gemini-2.5-flash", "llama3.2"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def oai(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    yield client
    await client.close()


# ---- OpenAI Responses, Embeddings, legacy Completions -----------------------------------------


@on_session_loop
async def test_responses_usage_and_output(oai: openai.AsyncOpenAI, base_url: str) -> None:
    resp = await oai.responses.create(model=GPT, input=f"hello {CACHING}", instructions="be brief")
    assert (resp.object, resp.status, resp.model) == ("response", "completed", GPT)
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.input_tokens_details.cached_tokens) == (1000, 200)
    assert (resp.usage.output_tokens, resp.usage.output_tokens_details.reasoning_tokens) == (40, 10)
    assert [item.type for item in resp.output] == ["reasoning", "message"]
    assert resp.output_text.startswith("tok0 tok1")
    raw = (await post(f"{base_url}/v1/responses", {"model": GPT, "input": CACHING}))[2]
    # OpenAI reports cache writes without a 5m/1h split: they stay unspecified-TTL writes.
    assert from_responses_body(orjson.loads(raw)).usage == EXPECTED.model_copy(
        update={"cache_creation_5m_input_tokens": 0, "cache_creation_1h_input_tokens": 0})


@on_session_loop
async def test_responses_stream_events_and_completed_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.responses.create(model=GPT, input=user("fake: prompt=500 cached=100 completion=50 chunks=3"),
                                        stream=True)
    events = [event async for event in stream]
    assert events[0].type == "response.created"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert sum(e.type == "response.output_text.delta" for e in events) == 3
    completed = events[-1]
    assert completed.type == "response.completed"
    usage = completed.response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens) == (500, 100, 50)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == completed.response.output_text


@on_session_loop
async def test_responses_stream_through_the_gateway_reader(base_url: str) -> None:
    body = {"model": GPT, "input": "fake: prompt=500 cached=100 completion=50 reasoning=5", "stream": True}
    reader = ResponsesStream()
    got = scanned(reader, (await post(f"{base_url}/v1/responses", body))[2])
    assert (got.source, got.usage.input_tokens, got.usage.cache_read_input_tokens) == (UsageSource.REPORTED, 500, 100)
    assert (got.usage.output_tokens, got.usage.reasoning_output_tokens, got.model_served) == (50, 5, GPT)
    assert reader.complete


@on_session_loop
async def test_responses_incomplete_and_failed(oai: openai.AsyncOpenAI, base_url: str) -> None:
    resp = await oai.responses.create(model=GPT, input="hi", max_output_tokens=16)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    stream = await oai.responses.create(model=GPT, input="fake: prompt=10 completion=100 chunks=4 error_after=2",
                                        stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.failed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failing = {"model": GPT, "stream": True, "input": "fake: prompt=10 completion=100 chunks=4 error_after=2"}
    raw = (await post(f"{base_url}/v1/responses", failing))[2]
    got = scanned(ResponsesStream(), raw)
    assert (got.usage.input_tokens, got.usage.output_tokens) == (10, 50)  # what was spent before failing
    assert "response failed: server_error" in got.problem


@on_session_loop
async def test_embeddings_usage_floats_and_base64(oai: openai.AsyncOpenAI, base_url: str) -> None:
    emb = await oai.embeddings.create(model="text-embedding-3-small", input=["one two", "three"], dimensions=4)
    assert [d.index for d in emb.data] == [0, 1]
    assert all(len(d.embedding) == 4 for d in emb.data)
    assert (emb.usage.prompt_tokens, emb.usage.total_tokens) == (3, 3)
    packed = await oai.embeddings.create(model="text-embedding-3-small", input="one two fake: prompt=77",
                                         dimensions=4, encoding_format="base64")
    vector = packed.data[0].embedding
    assert isinstance(vector, str)
    assert struct.unpack("<4f", base64.b64decode(vector)) == pytest.approx(emb.data[0].embedding)
    raw = (await post(f"{base_url}/v1/embeddings", {"model": "e", "input": "fake: prompt=77"}))[2]
    assert from_embeddings_body(orjson.loads(raw)).usage == TokenUsage(input_tokens=77)
    status, _, raw = await post(f"{base_url}/v1/embeddings", {"model": "e", "input": "fake: completion=3"})
    assert (status, orjson.loads(raw)["error"]["type"]) == (400, "invalid_request_error")


@on_session_loop
async def test_legacy_completions_whole_and_streamed(oai: openai.AsyncOpenAI, base_url: str) -> None:
    prompt = "Say this is a test fake: prompt=5 completion=7 chunks=3"
    whole = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt)
    assert whole.object == "text_completion"
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (5, 7)
    stream = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, stream=True,
                                          stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7
    body = {"model": "m", "prompt": prompt, "stream": True, "stream_options": {"include_usage": True}}
    got = scanned(OpenAICompletionsStream(), (await post(f"{base_url}/v1/completions", body))[2])
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.REPORTED, 5, 7)
    raw = (await post(f"{base_url}/v1/completions", {"model": "m", "prompt": [1, 2, 3]}))[2]
    assert from_completions_body(orjson.loads(raw)).usage.input_tokens == 3  # token-id prompt: its length


@on_session_loop
async def test_llamacpp_timings_give_compute_seconds(base_url: str) -> None:
    # prompt_ms = (1000 - 200) * 0.25 = 200, predicted_ms = 50 * 20 = 1000
    directive = "fake: prompt=1000 cached=200 completion=50 timings=1"
    raw = (await post(f"{base_url}/v1/chat/completions", {"model": LLAMA, "messages": user(directive)}))[2]
    body = orjson.loads(raw)
    assert body["timings"]["cache_n"] == 200
    assert (body["timings"]["prompt_n"], body["timings"]["predicted_n"]) == (800, 50)
    assert from_openai_body(body).compute_seconds == pytest.approx(1.2)
    streamed = {"model": LLAMA, "messages": user(directive), "stream": True, "stream_options": {"include_usage": True}}
    assert scanned(OpenAIChatStream(), (await post(f"{base_url}/v1/chat/completions", streamed))[2]
                   ).compute_seconds == pytest.approx(1.2)
    legacy = (await post(f"{base_url}/v1/completions", {"model": LLAMA, "prompt": directive}))[2]
    assert from_completions_body(orjson.loads(legacy)).compute_seconds == pytest.approx(1.2)
    plain = (await post(f"{base_url}/v1/chat/completions", {"model": LLAMA, "messages": user("hi")}))[2]
    assert "timings" not in orjson.loads(plain)


# ---- the shared directive grammar and the request readers (pure) ------------------------------


def test_directive_keys_for_every_api() -> None:
    assert parse_directive("fake: thoughts=7 cache_write_5m=1 cache_write_1h=2 timings=1 error_after=3") == {
        "reasoning": 7, "cache_write_5m": 1, "cache_write_1h": 2, "timings": 1, "error_after": 3}
    with pytest.raises(RequestError, match="known keys"):
        parse_directive("fake: cache_write_2h=1")


@pytest.mark.parametrize(("text", "message"), [
    ("fake: prompt=10 cached=5 cache_write_5m=4 cache_write_1h=2", "exceed prompt=10"),
    ("fake: completion=3 thoughts=4", "reasoning=4 exceeds completion=3"),
    ("fake: drop=1 error_after=2", "either drop or error_after"),
    ("fake: timings=2", "timings=2 exceeds the limit 1"),
])
def test_impossible_directives_are_refused(text: str, message: str) -> None:
    request = read_anthropic({"model": CLAUDE, "max_tokens": 5, "messages": user(text)})
    with pytest.raises(RequestError, match=message):
        plan_for(request, 0.0)


def test_readers_find_the_directive_in_each_api_s_last_turn() -> None:
    directive = "fake: prompt=3"
    call = Call({"model": GEMINI, "method": "streamGenerateContent"}, {"alt": "sse"})
    requests = [
        read_responses({"model": GPT, "input": [{"role": "user", "content": [{"type": "input_text",
                                                                                "text": directive}]}]}),
        read_anthropic({"model": CLAUDE, "max_tokens": 1, "messages": [
            {"role": "user", "content": [{"type": "text", "text": directive}]}]}),
        read_gemini({"contents": {"parts": [{"text": directive}]}}, call),
        read_ollama_chat({"model": LLAMA, "messages": user(directive)}),
        read_ollama_generate({"model": LLAMA, "prompt": directive}),
        read_embeddings({"model": "e", "input": ["x", directive]}),
    ]
    assert [plan_for(r, 0.0).usage.prompt for r in requests] == [3] * len(requests)
    gemini = requests[2]
    assert (gemini.model, gemini.stream) == (GEMINI, True)
    assert [r.stream for r in requests[3:5]] == [True, True]  # Ollama streams unless told not to


def test_readers_refuse_what_the_real_apis_refuse() -> None:
    with pytest.raises(RequestError, match="input"):
        read_responses({"model": GPT})
    with pytest.raises(RequestError, match="contents"):
        read_gemini({"contents": []}, Call({}, {}))
    with pytest.raises(RequestError, match="prompt"):
        read_ollama_generate({"model": LLAMA})
    unlimited = read_ollama_chat({"model": LLAMA, "messages": user("x"), "options": {"num_predict": -1}})
    assert unlimited.limit is None
