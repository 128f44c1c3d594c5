"""The fake upstream speaks OpenAI Chat Completions as the official SDK expects it.

Real HTTP on 127.0.0.1 (a free port) with the `openai` SDK as the client, because the gateway's
tests and benchmarks rely on the fake's wire shapes being exactly what the SDK parses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import pytest_asyncio

from aimeter.fake_upstream.app import bound_port, serve
from aimeter.fake_upstream.plan import RequestError, build_plan, count_prompt_tokens, parse_directive

# The server fixture lives on the session loop, so the tests that talk to it run there too.
on_session_loop = pytest.mark.asyncio(loop_scope="session")

MODEL = "gpt-4o-mini"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def base_url() -> AsyncIterator[str]:
    runner = await serve("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def post_raw(base_url: str, data: bytes) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/v1/chat/completions", data=data) as resp,
    ):
        return resp.status, await resp.read()


def sse_payloads(raw: bytes) -> list[bytes]:
    lines = [line for line in raw.split(b"\n") if line]
    assert all(line.startswith(b"data: ") for line in lines)
    return [line[len(b"data: ") :] for line in lines]


@on_session_loop
async def test_non_streaming_usage_follows_directive(client: openai.AsyncOpenAI) -> None:
    directive = "fake: prompt=1000 completion=500 cached=200 reasoning=50 served=gpt-4o-mini-2024-07-18"
    resp = await client.chat.completions.create(model=MODEL, messages=user(f"hello {directive}"))
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-4o-mini-2024-07-18"
    assert resp.service_tier == "default"
    assert resp.system_fingerprint is not None
    assert resp.system_fingerprint.startswith("fp_")
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.message.refusal is None
    usage = resp.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 500, 1500)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 200
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 50


@on_session_loop
async def test_default_usage_rule(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, *user("one two three")]
    resp = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=7)
    assert resp.model == MODEL
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == (4 + 2) + (4 + 3)
    assert resp.usage.completion_tokens == 7
    assert resp.choices[0].finish_reason == "length"
    unlimited = await client.chat.completions.create(model=MODEL, messages=messages)
    assert unlimited.usage is not None
    assert unlimited.usage.completion_tokens == 16
    assert unlimited.choices[0].finish_reason == "stop"


@on_session_loop
async def test_default_answer_is_about_one_kilobyte(base_url: str) -> None:
    status, body = await post_raw(base_url, orjson.dumps({"model": MODEL, "messages": user("hi")}))
    assert status == 200
    assert 900 <= len(body) <= 1200


@on_session_loop
async def test_stream_with_include_usage_ends_with_usage_only_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=user("fake: prompt=30 completion=20 cached=10 chunks=5"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    contents = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(contents) == 5
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (30, 20)
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])
    whole = await client.chat.completions.create(model=MODEL, messages=user("fake: chunks=5"))
    assert "".join(c or "" for c in contents) == whole.choices[0].message.content


@on_session_loop
async def test_stream_wire_places_usage_as_documented(base_url: str) -> None:
    request = {"model": MODEL, "messages": user("fake: chunks=3"), "stream": True}
    _, without = await post_raw(base_url, orjson.dumps(request))
    assert b'"usage"' not in without
    assert sse_payloads(without)[-1] == b"[DONE]"
    _, with_usage = await post_raw(base_url, orjson.dumps({**request, "stream_options": {"include_usage": True}}))
    objects = [orjson.loads(p) for p in sse_payloads(with_usage)[:-1]]
    assert all("usage" in o for o in objects)
    assert [o["usage"] is None for o in objects] == [True] * (len(objects) - 1) + [False]
    assert all(o["obfuscation"] for o in objects)
    plain = {**request, "stream_options": {"include_obfuscation": False}}
    _, unpadded = await post_raw(base_url, orjson.dumps(plain))
    assert b'"obfuscation"' not in unpadded


@on_session_loop
async def test_gap_paces_the_stream(client: openai.AsyncOpenAI) -> None:
    started = time.perf_counter()
    stream = await client.chat.completions.create(model=MODEL, messages=user("fake: chunks=3 gap_ms=20"), stream=True)
    deltas = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(deltas) == 3
    assert time.perf_counter() - started >= 0.06


@on_session_loop
async def test_stream_chunk_count_is_steerable(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model=MODEL, messages=user("fake: chunks=100"), stream=True)
    deltas = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(deltas) == 100


@on_session_loop
@pytest.mark.parametrize(
    ("status", "exc_type", "err_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (404, openai.NotFoundError, "invalid_request_error"),
        (429, openai.RateLimitError, "requests"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "service_unavailable_error"),
    ],
)
async def test_status_directive_raises_the_matching_sdk_error(
    client: openai.AsyncOpenAI, status: int, exc_type: type[openai.APIStatusError], err_type: str
) -> None:
    with pytest.raises(exc_type) as caught:
        await client.chat.completions.create(model=MODEL, messages=user(f"fake: status={status}"))
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == err_type
    assert set(caught.value.body) == {"message", "type", "param", "code"}


@on_session_loop
async def test_server_error_carries_openai_message(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError, match="The server had an error"):
        await client.chat.completions.create(model=MODEL, messages=user("fake: status=500"), stream=True)


@on_session_loop
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        orjson.dumps({"messages": user("hi")}),
        orjson.dumps({"model": MODEL}),
        orjson.dumps({"model": MODEL, "messages": []}),
        orjson.dumps({"model": MODEL, "messages": user("fake: prompt=10 cached=11")}),
        orjson.dumps({"model": MODEL, "messages": user("fake: completion=1 reasoning=2")}),
        orjson.dumps({"model": MODEL, "messages": user("fake: colour=blue")}),
        orjson.dumps({"model": MODEL, "messages": user("fake: status=200")}),
    ],
)
async def test_bad_requests_get_400_in_openai_shape(base_url: str, body: bytes) -> None:
    status, raw = await post_raw(base_url, body)
    assert status == 400
    error = orjson.loads(raw)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]


@on_session_loop
async def test_latency_directive_delays_the_answer(client: openai.AsyncOpenAI) -> None:
    started = time.perf_counter()
    await client.chat.completions.create(model=MODEL, messages=user("fake: latency_ms=50"))
    assert time.perf_counter() - started >= 0.05
    started = time.perf_counter()
    stream = await client.chat.completions.create(model=MODEL, messages=user("fake: latency_ms=50"), stream=True)
    await anext(aiter(stream))
    assert time.perf_counter() - started >= 0.05
    await stream.close()


@on_session_loop
async def test_server_wide_latency_applies_without_directive() -> None:
    runner = await serve("127.0.0.1", 0, latency_ms=40)
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}"
        started = time.perf_counter()
        status, _ = await post_raw(url, orjson.dumps({"model": MODEL, "messages": user("hi")}))
        assert status == 200
        assert time.perf_counter() - started >= 0.04
    finally:
        await runner.cleanup()


@on_session_loop
async def test_drop_cuts_the_stream_without_done(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model=MODEL, messages=user("fake: chunks=5 drop=2"), stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        await collect(stream, received)
    assert len(received) == 3  # the role chunk, then two content deltas


@on_session_loop
async def test_health_and_unknown_paths(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/health") as resp:
            assert (resp.status, await resp.text()) == (200, "ok")
        async with session.get(f"{base_url}/v1/chat/completions") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"


def test_directive_parsing_rules() -> None:
    assert parse_directive("no directive here") == {}
    assert parse_directive("this is fake: news") == {}
    assert parse_directive("x fake: chunks=3 served=m-1\nmore text") == {"chunks": 3, "served": "m-1"}
    with pytest.raises(RequestError, match="non-negative integer"):
        parse_directive("fake: prompt=-1")


def test_prompt_count_reads_text_parts() -> None:
    parts = [{"type": "text", "text": "a b"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert count_prompt_tokens([{"role": "user", "content": parts}, {"role": "assistant", "content": None}]) == 10


def test_plan_reads_only_the_last_message() -> None:
    body = {"model": MODEL, "messages": [*user("fake: prompt=99"), *user("plain")], "max_completion_tokens": 3}
    plan = build_plan(orjson.dumps(body), 0.0)
    assert plan.usage.prompt == 4 + 2 + 4 + 1
    assert plan.usage.completion == 3


async def collect(stream: openai.AsyncStream[Any], into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.choices[0].delta.content or "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@on_session_loop
async def test_command_line_serves_until_sigterm() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = "from aimeter.fake_upstream.app import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", str(port)], env=env)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/health")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def wait_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    pytest.fail(f"{url} never answered")
