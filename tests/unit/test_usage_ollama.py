"""Ollama native API usage: counts on the ``done: true`` object, GPU time without model load time.

Fixtures follow Ollama's docs: the usage page's ``/api/generate`` example (with and without
``prompt_eval_cached_count``) and the API docs' streamed ``/api/chat`` NDJSON lines. Streams are
driven through ``StreamScanner(..., ndjson=True)``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aimeter.events import UsageSource
from aimeter.gateway.providers.ollama import OllamaStream, from_ollama_body, ollama_error, ollama_streams
from aimeter.gateway.sse import StreamScanner
from tests.support.usage_checks import check_extracted

# docs.ollama.com/api/usage: a non-streaming /api/generate answer.
DOC_GENERATE: dict[str, Any] = {
    "model": "gemma3", "created_at": "2025-10-17T23:14:07.414671Z", "response": "Hello! How can I help you today?",
    "done": True, "done_reason": "stop", "total_duration": 174560334, "load_duration": 101397084,
    "prompt_eval_count": 11, "prompt_eval_duration": 13074791, "eval_count": 18, "eval_duration": 52479709,
}
# API docs, /api/chat streaming: content lines, then the final line with the metrics.
DOC_CHAT_LINES = [
    {"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00",
     "message": {"role": "assistant", "content": "The"}, "done": False},
    {"model": "llama3.2", "created_at": "2023-08-04T08:52:19.385406455-07:00",
     "message": {"role": "assistant", "content": " sky"}, "done": False},
    {"model": "llama3.2", "created_at": "2023-08-04T19:22:45.499127Z", "message": {"role": "assistant", "content": ""},
     "done": True, "total_duration": 4883583458, "load_duration": 1334875, "prompt_eval_count": 26,
     "prompt_eval_duration": 342546000, "eval_count": 282, "eval_duration": 4535599000},
]


def ndjson(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def test_documented_generate_answer() -> None:
    got = from_ollama_body(DOC_GENERATE)
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.output_tokens) == (11, 18)
    assert got.model_served == "gemma3"
    # prompt eval + eval only: the 101 ms model load is not this request's GPU work.
    assert got.compute_seconds == pytest.approx((13074791 + 52479709) / 1e9)


def test_cached_prompt_tokens_are_a_subset_of_prompt_eval_count() -> None:
    got = from_ollama_body({**DOC_GENERATE, "prompt_eval_cached_count": 8}).usage
    assert (got.input_tokens, got.cache_read_input_tokens) == (11, 8)


def test_missing_counts_and_bad_values() -> None:
    assert "no usage" in from_ollama_body({"model": "m", "done": True}).problem
    assert from_ollama_body({**DOC_GENERATE, "eval_count": -1}).source is UsageSource.NONE
    assert from_ollama_body({**DOC_GENERATE, "eval_count": 2**41}).source is UsageSource.NONE
    assert from_ollama_body({**DOC_GENERATE, "prompt_eval_count": 1.0}).source is UsageSource.NONE
    assert from_ollama_body({**DOC_GENERATE, "prompt_eval_cached_count": 12}).source is UsageSource.NONE
    assert from_ollama_body("done").source is UsageSource.NONE


def test_prompt_eval_count_absent_when_fully_cached_on_old_versions() -> None:
    old = {k: v for k, v in DOC_GENERATE.items() if k not in {"prompt_eval_count", "prompt_eval_duration"}}
    got = from_ollama_body(old)
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.REPORTED, 0, 18)
    assert got.compute_seconds == pytest.approx(52479709 / 1e9)


@pytest.mark.parametrize("durations", [
    {"eval_duration": -5}, {"eval_duration": 1.5}, {"eval_duration": True}, {"prompt_eval_duration": 10**19},
    {"prompt_eval_duration": 0, "eval_duration": 0},
])
def test_bad_durations_give_no_compute_time_but_keep_tokens(durations: dict[str, Any]) -> None:
    got = from_ollama_body({**DOC_GENERATE, **durations})
    assert (got.source, got.compute_seconds) == (UsageSource.REPORTED, None)


def test_error_shape_and_error_body() -> None:
    body = orjson.loads(ollama_error(404, 'model "llama9" not found, try pulling it first'))
    assert body == {"error": 'model "llama9" not found, try pulling it first'}
    got = from_ollama_body(body)
    assert got.source is UsageSource.NONE
    assert "not found" in got.problem


@pytest.mark.parametrize(("request_body", "streams"), [
    ({"model": "m", "messages": []}, True),
    ({"model": "m", "stream": None}, True),
    ({"model": "m", "stream": True}, True),
    ({"model": "m", "stream": False}, False),
    ("not an object", True),
])
def test_ollama_streams_by_default(request_body: Any, streams: bool) -> None:
    assert ollama_streams(request_body) is streams


# ---- streams -----------------------------------------------------------------------------------


def scan(data: bytes, cuts: list[int] | None = None) -> tuple[OllamaStream, StreamScanner]:
    reader = OllamaStream()
    scanner = StreamScanner(reader, ndjson=True)
    pos = 0
    for cut in cuts or []:
        assert scanner.feed(data[pos:pos + cut]) == data[pos:pos + cut]
        pos += cut
    scanner.feed(data[pos:])
    scanner.finish()
    return reader, scanner


@given(st.lists(st.integers(1, 60), max_size=12))
def test_documented_chat_stream_counts_on_the_done_line(cuts: list[int]) -> None:
    reader, scanner = scan(ndjson(DOC_CHAT_LINES), cuts)
    got = scanner.usage()
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.output_tokens) == (26, 282)
    assert got.compute_seconds == pytest.approx((342546000 + 4535599000) / 1e9)
    assert got.model_served == "llama3.2"
    assert reader.complete


def test_generate_stream_cut_before_done_is_estimated_from_response_text() -> None:
    lines = [{"model": "gemma3", "created_at": "2025-10-26T17:15:24.097767Z", "response": "That's a", "done": False},
             {"model": "gemma3", "created_at": "2025-10-26T17:15:24.109172Z", "response": " fantastic", "done": False}]
    reader, scanner = scan(ndjson(lines))
    got = scanner.usage()
    assert (got.source, got.usage.output_tokens) == (UsageSource.ESTIMATED, 5)  # 18 bytes
    assert not reader.complete


def test_error_line_mid_stream_is_recorded() -> None:
    data = ndjson([*DOC_CHAT_LINES[:2], {"error": "an error was encountered while running the model"}])
    reader, scanner = scan(data)
    assert "error was encountered" in reader.result().problem  # the scanner's estimate keeps its own note
    assert scanner.usage().source is UsageSource.ESTIMATED
    assert not reader.complete


def test_compact_and_spaced_done_lines_both_count() -> None:
    spaced = json.dumps(DOC_CHAT_LINES[-1]).encode() + b"\n"  # "done": true, with a space
    assert scan(spaced)[1].usage().usage.output_tokens == 282


# ---- properties --------------------------------------------------------------------------------


@st.composite
def final_line(draw: st.DrawFn) -> dict[str, Any]:
    prompt = draw(st.integers(0, 2**39))
    return {"model": "m", "done": True, "prompt_eval_count": prompt,
            "prompt_eval_cached_count": draw(st.integers(0, prompt)), "eval_count": draw(st.integers(0, 2**39)),
            "prompt_eval_duration": draw(st.integers(0, 10**15)), "eval_duration": draw(st.integers(0, 10**15))}


@given(final_line())
def test_any_valid_final_line_maps_with_subsets_inside_totals(line: dict[str, Any]) -> None:
    got = from_ollama_body(line)
    assert got.source is UsageSource.REPORTED
    assert got.usage.input_tokens == line["prompt_eval_count"]
    assert got.usage.cache_read_input_tokens <= got.usage.input_tokens
    assert got.usage.output_tokens == line["eval_count"]
    assert got.compute_seconds is None or got.compute_seconds >= 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["model", "done", "message", "content", "response", "error", "prompt_eval_count",
                         "eval_count", "eval_duration", "prompt_eval_duration", "prompt_eval_cached_count"])
        | st.text(max_size=6), inner, max_size=5),
    max_leaves=25,
)


@given(st.lists(JSON, max_size=8), st.booleans(), st.lists(st.integers(1, 64), max_size=6))
def test_random_json_lines_give_a_valid_usage_whatever_the_split(lines: list[Any], final: bool,
                                                                 cuts: list[int]) -> None:
    encoded = [json.dumps(line) for line in lines]
    if final:
        encoded.append(json.dumps({"done": True, **(lines[0] if lines and isinstance(lines[0], dict) else {})}))
    data = "\n".join(encoded).encode()
    assert check_extracted(scan(data)[1].usage()) == scan(data, cuts)[1].usage()
    for line in lines:
        check_extracted(from_ollama_body(line))


@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=6))
def test_random_bytes_give_a_valid_usage_whatever_the_split(data: bytes, cuts: list[int]) -> None:
    assert check_extracted(scan(data)[1].usage()) == scan(data, cuts)[1].usage()
