"""Every API x {stream, non-stream} x {success, upstream error, client disconnect}, through the official SDKs.

Each case tags its request (``X-Aimeter-Tags: case=<id>``) and then reads its own event back from
ClickHouse (real Kafka, pricer process, chDB) to check the normalized token classes and status.
The fake upstream reports the directive's numbers in each API's OWN semantics (e.g. Anthropic's
``input_tokens`` excludes cache tokens); the stored row must hold them normalized.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable
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
SELECT api, status, http_status, usage_source, input_tokens, cache_read_input_tokens, cache_creation_input_tokens,
       cache_creation_5m_input_tokens, cache_creation_1h_input_tokens, output_tokens, reasoning_output_tokens, stream,
       backend_compute_seconds
FROM usage_events FINAL WHERE tags['case'] = {case:String}
"""
OK = "fake: prompt=1200 completion=300 cached=200 reasoning=40 chunks=6"
ANTHROPIC_OK = "fake: prompt=1200 completion=300 cached=200 cache_write_5m=100 cache_write_1h=50 chunks=6"
FAIL = "fake: status=500"
SLOW = "fake: prompt=1200 completion=300 chunks=60 gap_ms=50"
CANCEL_AFTER = 8  # events read before hanging up: past every API's preamble (Responses sends four)
Caller = Callable[[Any, str, str, str, bool, bool], None]


def _drain(events: Any, cancel: bool) -> None:
    """Read a whole stream, or (cancel) a few events and then hang up like a user closing the tab."""
    for seen, _ in enumerate(events, start=1):
        if cancel and seen == CANCEL_AFTER:
            break
    events.close()


def openai_client(stack, key: str, tag: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0,
                         default_headers={"X-Aimeter-Tags": f"case={tag}"})


def call_chat(stack, key, tag, text, stream, cancel):
    client = openai_client(stack, key, tag)
    out = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                                         stream=stream)
    if stream:
        _drain(out, cancel)


def call_completions(stack, key, tag, text, stream, cancel):
    out = openai_client(stack, key, tag).completions.create(model="gpt-3.5-turbo-instruct", prompt=text,
                                                            stream=stream)
    if stream:
        _drain(out, cancel)


def call_responses(stack, key, tag, text, stream, cancel):
    out = openai_client(stack, key, tag).responses.create(model="gpt-4o-mini", input=text, stream=stream)
    if stream:
        _drain(out, cancel)


def call_azure(stack, key, tag, text, stream, cancel):
    client = openai.AzureOpenAI(azure_endpoint=stack.gateway_url, api_key=key, api_version="2024-10-21",
                                max_retries=0, default_headers={"X-Aimeter-Tags": f"case={tag}"})
    out = client.chat.completions.create(model="gpt-4o-prod", messages=[{"role": "user", "content": text}],
                                         stream=stream)
    if stream:
        _drain(out, cancel)


def call_anthropic(stack, key, tag, text, stream, cancel):
    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=key, max_retries=0,
                                 default_headers={"X-Aimeter-Tags": f"case={tag}"})
    out = client.messages.create(model="claude-sonnet-4-6", max_tokens=1024, stream=stream,
                                 messages=[{"role": "user", "content": text}])
    if stream:
        _drain(out, cancel)


def call_gemini(stack, key, tag, text, stream, cancel):
    client = genai.Client(api_key=key, http_options=genai_types.HttpOptions(
        base_url=stack.gateway_url, headers={"X-Aimeter-Tags": f"case={tag}"},
        retry_options=genai_types.HttpRetryOptions(attempts=1)))
    if not stream:
        client.models.generate_content(model="gemini-2.5-pro", contents=text)
        return
    _drain(client.models.generate_content_stream(model="gemini-2.5-pro", contents=text), cancel)
    client.close()


def _ollama(path: str):
    def call(stack, key, tag, text, stream, cancel):
        body = {"model": "llama3.1:8b", "stream": stream}
        body.update({"messages": [{"role": "user", "content": text}]} if path == "/api/chat" else {"prompt": text})
        conn = http.client.HTTPConnection("127.0.0.1", stack.settings.gateway_port, timeout=30)
        conn.request("POST", path, json.dumps(body), {"Authorization": f"Bearer {key}", "X-Aimeter-Tags": f"case={tag}",
                                                      "Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status >= 400:
            raise RuntimeError(f"ollama error {resp.status}: {resp.read()!r}")
        if cancel:
            for _ in range(CANCEL_AFTER):
                resp.readline()
        else:
            resp.read()
        conn.close()
    return call


APIS: dict[str, tuple[str, Caller, type[Exception] | tuple[type[Exception], ...]]] = {
    "chat": ("openai.chat", call_chat, openai.InternalServerError),
    "completions": ("openai.completions", call_completions, openai.InternalServerError),
    "responses": ("openai.responses", call_responses, openai.InternalServerError),
    "azure": ("openai.chat", call_azure, openai.InternalServerError),
    "anthropic": ("anthropic.messages", call_anthropic, anthropic.InternalServerError),
    "gemini": ("gemini.generate_content", call_gemini, genai_errors.ServerError),
    "ollama-chat": ("ollama.chat", _ollama("/api/chat"), RuntimeError),
    "ollama-generate": ("ollama.generate", _ollama("/api/generate"), RuntimeError),
}
CASES = [(api, stream, outcome) for api in APIS for stream in (False, True)
         for outcome in ("ok", "upstream_error", "client_cancelled") if stream or outcome != "client_cancelled"]


def expected_ok(api: str) -> dict[str, int]:
    """Normalized token classes for the OK directive, per what each API can report."""
    if api == "anthropic":
        return {"input": 1200, "cache_read": 200, "cache_write": 150, "w5m": 100, "w1h": 50, "output": 300,
                "reasoning": 0}
    reasoning = 0 if api.startswith("ollama") else 40
    cached = 200
    return {"input": 1200, "cache_read": cached, "cache_write": 0, "w5m": 0, "w1h": 0, "output": 300,
            "reasoning": reasoning}


@pytest.mark.parametrize(("api", "stream", "outcome"), CASES, ids=[f"{a}-{'stream' if s else 'whole'}-{o}"
                                                                      for a, s, o in CASES])
def test_api_matrix(stack, clickhouse, api: str, stream: bool, outcome: str) -> None:
    api_name, call, error_type = APIS[api]
    tag = uuid.uuid4().hex[:12]
    key = key_for(stack, "search", "ranking")
    text = {"ok": ANTHROPIC_OK if api == "anthropic" else OK, "upstream_error": FAIL,
            "client_cancelled": SLOW}[outcome]
    if outcome == "upstream_error":
        with pytest.raises(error_type):
            call(stack, key, tag, f"hello {text}", stream, False)
    else:
        call(stack, key, tag, f"hello {text}", stream, outcome == "client_cancelled")

    row = wait_for_row(clickhouse, ROW_SQL, {"case": tag})[0]
    (got_api, status, http_status, source, inp, cache_read, cache_write, w5m, w1h, out, reasoning, streamed,
     compute) = row
    assert (got_api, status, streamed) == (api_name, outcome, stream)
    if outcome == "ok":
        want = expected_ok(api)
        assert http_status == 200
        assert source == "reported"
        assert (inp, cache_read, cache_write, w5m, w1h, out, reasoning) == (
            want["input"], want["cache_read"], want["cache_write"], want["w5m"], want["w1h"], want["output"],
            want["reasoning"])
        if api.startswith("ollama"):
            assert compute is not None
            assert compute > 0  # eval durations kept as GPU time
    elif outcome == "upstream_error":
        assert http_status == 500
    else:
        assert source in {"estimated", "reported"}
        assert 0 < out < 300, "a cancelled stream is billed for what was generated, not more"
        assert inp > 0, "the upstream took the prompt, so a cancelled stream is billed for it (estimated if unreported)"


@pytest.mark.parametrize("stream", [False])
def test_embeddings(stack, clickhouse, stream: bool) -> None:
    tag = uuid.uuid4().hex[:12]
    client = openai_client(stack, key_for(stack, "search", "ranking"), tag)
    client.embeddings.create(model="text-embedding-3-small", input="hello fake: prompt=321")
    row = wait_for_row(clickhouse, ROW_SQL, {"case": tag})[0]
    assert row[:5] == ("openai.embeddings", "ok", 200, "reported", 321)
    assert row[9] == 0
