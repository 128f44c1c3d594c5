"""Gemini ``usageMetadata``: cached content inside the prompt count, thoughts outside the candidates count.

Fixtures: the context-caching guide's usage (cachedContentTokenCount inside promptTokenCount), an
``alt=sse`` capture of gemini-2.5-flash (simonw/llm-gemini#97: thoughts outside candidates, usage
repeated as a running total), and the API reference's field list for modality breakdowns.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aimeter.events import UsageSource
from aimeter.gateway.providers.gemini import GeminiStream, from_gemini_body, gemini_error
from aimeter.gateway.sse import StreamScanner
from tests.support.usage_checks import check_extracted

# Context-caching guide: 696190 of the 696219 prompt tokens came from the cache; total = prompt + candidates.
CACHED_RESPONSE: dict[str, Any] = {
    "candidates": [{"content": {"parts": [{"text": "The transcript…"}], "role": "model"}, "finishReason": "STOP",
                    "index": 0}],
    "usageMetadata": {"promptTokenCount": 696219, "cachedContentTokenCount": 696190, "candidatesTokenCount": 214,
                      "totalTokenCount": 696433},
    "modelVersion": "gemini-2.0-flash-001",
}

# `?alt=sse` capture (gemini-2.5-flash): 5 + 44 + 186 = 235, so candidates exclude thoughts.
SSE_CAPTURE = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Here you go!\\n\\n1.  **English:** Hi\\n"}],'
    b'"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 5,"candidatesTokenCount": 39,'
    b'"totalTokenCount": 230,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 5}],'
    b'"thoughtsTokenCount": 186},"modelVersion": "models/gemini-2.5-flash-preview-05-20",'
    b'"responseId": "AdVRaMmDCYekqtsPrb_-iAw"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": "**Italian:** Ciao"}],"role": "model"},'
    b'"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 5,"candidatesTokenCount": 44,'
    b'"totalTokenCount": 235,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 5}],'
    b'"thoughtsTokenCount": 186},"modelVersion": "models/gemini-2.5-flash-preview-05-20",'
    b'"responseId": "AdVRaMmDCYekqtsPrb_-iAw"}\r\n\r\n'
)


def body_with(usage: dict[str, Any]) -> dict[str, Any]:
    return {**CACHED_RESPONSE, "usageMetadata": usage}


def test_cached_content_is_a_subset_of_the_prompt_count() -> None:
    got = from_gemini_body(CACHED_RESPONSE)
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens) == (696219, 696190)  # not their sum
    assert got.usage.output_tokens == 214
    assert got.model_served == "gemini-2.0-flash-001"


def test_thoughts_are_added_to_candidates_and_are_the_reasoning_subset() -> None:
    got = from_gemini_body(body_with({"promptTokenCount": 5, "candidatesTokenCount": 44, "thoughtsTokenCount": 186,
                                      "totalTokenCount": 235})).usage
    assert (got.output_tokens, got.reasoning_output_tokens) == (230, 186)


def test_tool_use_prompt_tokens_are_input_outside_the_prompt_count() -> None:
    """totalTokenCount = prompt + candidates + toolUsePrompt + thoughts (API reference)."""
    got = from_gemini_body(body_with({"promptTokenCount": 100, "toolUsePromptTokenCount": 900,
                                      "candidatesTokenCount": 10, "totalTokenCount": 1010})).usage
    assert got.input_tokens == 1000


def test_cache_and_thoughts_together() -> None:
    usage = {"promptTokenCount": 5000, "cachedContentTokenCount": 4096, "candidatesTokenCount": 100,
             "thoughtsTokenCount": 400, "totalTokenCount": 5500,
             "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 4096}]}
    got = from_gemini_body(body_with(usage)).usage
    assert (got.input_tokens, got.cache_read_input_tokens) == (5000, 4096)
    assert (got.output_tokens, got.reasoning_output_tokens) == (500, 400)


def test_modalities_give_audio_and_image_subsets() -> None:
    usage = {"promptTokenCount": 1000, "candidatesTokenCount": 300, "toolUsePromptTokenCount": 50,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 200}, {"modality": "AUDIO", "tokenCount": 500},
                                     {"modality": "IMAGE", "tokenCount": 258}, {"modality": "VIDEO", "tokenCount": 42}],
             "toolUsePromptTokensDetails": [{"modality": "IMAGE", "tokenCount": 50}],
             "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 290},
                                         {"modality": "TEXT", "tokenCount": 10}]}
    got = from_gemini_body(body_with(usage)).usage
    assert (got.input_tokens, got.input_audio_tokens, got.input_image_tokens) == (1050, 500, 308)
    assert (got.output_tokens, got.output_image_tokens, got.output_audio_tokens) == (300, 290, 0)


@pytest.mark.parametrize("usage", [
    {"promptTokenCount": 10, "cachedContentTokenCount": 11},
    {"promptTokenCount": -1, "toolUsePromptTokenCount": 5},  # a negative part cannot hide in a sum
    {"candidatesTokenCount": 5, "thoughtsTokenCount": -2},
    {"promptTokenCount": 2**41},
    {"promptTokenCount": 1.5},
    {"promptTokenCount": 10, "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": "3"}]},
    {"promptTokenCount": 10, "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 11}]},
])
def test_bad_data_is_flagged_not_raised(usage: dict[str, Any]) -> None:
    got = from_gemini_body(body_with(usage))
    assert got.source is UsageSource.NONE
    assert got.problem.startswith("invalid usage")


def test_json_array_stream_form_takes_the_last_usage() -> None:
    chunks = [orjson.loads(line.removeprefix(b"data: ")) for line in SSE_CAPTURE.split(b"\r\n\r\n") if line]
    got = from_gemini_body(chunks)
    assert (got.usage.input_tokens, got.usage.output_tokens) == (5, 44 + 186)
    assert got.model_served == "gemini-2.5-flash-preview-05-20"
    assert from_gemini_body([]).source is UsageSource.NONE
    ended_badly = from_gemini_body([*chunks[:1], orjson.loads(gemini_error(503, "overloaded"))])
    assert (ended_badly.usage.output_tokens, ended_badly.problem) == (39 + 186, "stream error: UNAVAILABLE: overloaded")


@pytest.mark.parametrize(("status", "name"), [
    (400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"), (404, "NOT_FOUND"),
    (429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (502, "UNAVAILABLE"), (503, "UNAVAILABLE"),
    (504, "DEADLINE_EXCEEDED"), (418, "FAILED_PRECONDITION"), (599, "INTERNAL"),
])
def test_error_shape_per_status(status: int, name: str) -> None:
    body = orjson.loads(gemini_error(status, "msg"))
    assert body == {"error": {"code": status, "message": "msg", "status": name}}
    got = from_gemini_body(body)
    assert (got.source, got.problem) == (UsageSource.NONE, f"error body: {name}: msg")


# ---- streams -----------------------------------------------------------------------------------


def scan(data: bytes, cuts: list[int] | None = None) -> tuple[GeminiStream, StreamScanner]:
    reader = GeminiStream()
    scanner = StreamScanner(reader)
    pos = 0
    for cut in cuts or []:
        scanner.feed(data[pos:pos + cut])
        pos += cut
    scanner.feed(data[pos:])
    scanner.finish()
    return reader, scanner


@given(st.lists(st.integers(1, 120), max_size=12))
def test_sse_capture_last_running_usage_wins(cuts: list[int]) -> None:
    reader, scanner = scan(SSE_CAPTURE, cuts)
    got = scanner.usage()
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.output_tokens, got.usage.reasoning_output_tokens) == (5, 230, 186)
    assert got.model_served == "gemini-2.5-flash-preview-05-20"
    assert reader.complete


def test_stream_cut_before_finish_reason_keeps_the_running_count_as_estimated() -> None:
    first = SSE_CAPTURE[: SSE_CAPTURE.index(b"\r\n\r\n") + 4]
    reader, scanner = scan(first)
    got = scanner.usage()
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.ESTIMATED, 5, 39 + 186)
    assert not reader.complete


def test_error_chunk_and_blocked_prompt() -> None:
    error = b"data: " + gemini_error(503, "The model is overloaded.") + b"\r\n\r\n"
    reader, scanner = scan(SSE_CAPTURE[: SSE_CAPTURE.index(b"\r\n\r\n") + 4] + error)
    assert "UNAVAILABLE: The model is overloaded." in scanner.usage().problem
    assert not reader.complete
    blocked = {"promptFeedback": {"blockReason": "SAFETY"},
               "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}, "modelVersion": "gemini-2.5-pro"}
    reader, scanner = scan(b"data: " + orjson.dumps(blocked) + b"\n\n")
    got = scanner.usage()
    assert (got.source, got.usage.input_tokens, got.problem) == (UsageSource.REPORTED, 12, "prompt blocked: SAFETY")
    assert reader.complete


def test_text_of_skips_thought_summaries() -> None:
    chunk = {"candidates": [{"content": {"parts": [{"text": "thinking…", "thought": True}, {"text": "Answer"}]}},
                            {"content": {"parts": [{"text": " two"}]}}]}
    assert GeminiStream().text_of(chunk) == "Answer two"
    assert GeminiStream().text_of({"candidates": [{"content": {"parts": "x"}}]}) == ""


# ---- properties --------------------------------------------------------------------------------


@st.composite
def usage_metadata(draw: st.DrawFn) -> dict[str, Any]:
    prompt, tool = draw(st.integers(0, 2**38)), draw(st.integers(0, 2**38))
    audio = draw(st.integers(0, prompt))
    image = draw(st.integers(0, prompt - audio))
    usage = {"promptTokenCount": prompt, "toolUsePromptTokenCount": tool,
             "cachedContentTokenCount": draw(st.integers(0, prompt)),
             "candidatesTokenCount": draw(st.integers(0, 2**38)), "thoughtsTokenCount": draw(st.integers(0, 2**38)),
             "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": audio},
                                     {"modality": "IMAGE", "tokenCount": image}]}
    usage["totalTokenCount"] = prompt + tool + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    return usage


@given(usage_metadata())
def test_any_valid_usage_normalizes_to_the_documented_total(usage: dict[str, Any]) -> None:
    got = from_gemini_body(body_with(usage))
    assert got.source is UsageSource.REPORTED
    tokens = got.usage
    assert tokens.input_tokens == usage["promptTokenCount"] + usage["toolUsePromptTokenCount"]
    assert tokens.input_tokens + tokens.output_tokens == usage["totalTokenCount"]
    assert tokens.cache_read_input_tokens <= tokens.input_tokens
    assert tokens.input_audio_tokens + tokens.input_image_tokens <= tokens.input_tokens
    assert tokens.reasoning_output_tokens <= tokens.output_tokens


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["candidates", "content", "parts", "text", "thought", "finishReason", "usageMetadata",
                         "promptTokenCount", "candidatesTokenCount", "promptTokensDetails", "modality", "tokenCount",
                         "modelVersion", "error", "promptFeedback", "blockReason"])
        | st.text(max_size=6), inner, max_size=5),
    max_leaves=25,
)


@given(st.lists(JSON, max_size=8), st.lists(st.integers(1, 64), max_size=6))
def test_random_json_chunks_give_a_valid_usage_whatever_the_split(chunks: list[Any], cuts: list[int]) -> None:
    data = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    assert check_extracted(scan(data)[1].usage()) == scan(data, cuts)[1].usage()
    check_extracted(from_gemini_body(chunks))
    for chunk in chunks:
        check_extracted(from_gemini_body(chunk))
        check_extracted(from_gemini_body({"usageMetadata": chunk}))


@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=6))
def test_random_bytes_give_a_valid_usage_whatever_the_split(data: bytes, cuts: list[int]) -> None:
    assert check_extracted(scan(data)[1].usage()) == scan(data, cuts)[1].usage()
