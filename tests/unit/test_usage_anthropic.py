"""Anthropic Messages usage: ``input_tokens`` excludes cache tokens, so the normalized input is the sum.

Fixtures follow Anthropic's documented shapes: the Message object, the prompt-caching guide's usage
with the 5m / 1h split, and the streaming guide's event sequence. Streams go through ``StreamScanner``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aimeter.events import UsageSource
from aimeter.gateway.providers.anthropic import AnthropicStream, anthropic_error, from_anthropic_body
from aimeter.gateway.sse import StreamScanner
from tests.support.usage_checks import check_extracted

# Messages API reference: the Message object.
DOC_MESSAGE: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}], "model": "claude-3-7-sonnet-20250219",
    "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 2095, "output_tokens": 503},
}
# Prompt-caching guide, "Mixing different TTLs": usage with the cache_creation split.
MIXED_TTL_USAGE = {"input_tokens": 2048, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 248,
                   "output_tokens": 503,
                   "cache_creation": {"ephemeral_1h_input_tokens": 100, "ephemeral_5m_input_tokens": 148}}


def message(usage: dict[str, Any]) -> dict[str, Any]:
    return {**DOC_MESSAGE, "usage": usage}


def test_plain_message_without_cache() -> None:
    got = from_anthropic_body(DOC_MESSAGE)
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.output_tokens) == (2095, 503)
    assert got.model_served == "claude-3-7-sonnet-20250219"


def test_cache_reads_and_writes_are_added_to_uncached_input() -> None:
    got = from_anthropic_body(message(MIXED_TTL_USAGE)).usage
    assert got.input_tokens == 2048 + 1800 + 248
    assert got.cache_read_input_tokens == 1800
    assert got.cache_creation_input_tokens == 248
    assert (got.cache_creation_5m_input_tokens, got.cache_creation_1h_input_tokens) == (148, 100)


def test_cache_read_only() -> None:
    got = from_anthropic_body(message({"input_tokens": 50, "cache_read_input_tokens": 100000,
                                       "cache_creation_input_tokens": 0, "output_tokens": 5})).usage
    assert (got.input_tokens, got.cache_read_input_tokens, got.cache_creation_input_tokens) == (100050, 100000, 0)


def test_cache_writes_without_the_split_stay_unspecified_ttl() -> None:
    """Older API versions: no ``cache_creation`` object; genai-prices then uses the default write rate."""
    got = from_anthropic_body(message({"input_tokens": 10, "cache_creation_input_tokens": 1000,
                                       "cache_read_input_tokens": 0, "output_tokens": 5})).usage
    assert (got.input_tokens, got.cache_creation_input_tokens) == (1010, 1000)
    assert (got.cache_creation_5m_input_tokens, got.cache_creation_1h_input_tokens) == (0, 0)


def test_one_hour_writes_only() -> None:
    usage = {"input_tokens": 3, "cache_creation_input_tokens": 4000, "output_tokens": 1,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 4000}}
    got = from_anthropic_body(message(usage)).usage
    assert (got.input_tokens, got.cache_creation_1h_input_tokens, got.cache_creation_5m_input_tokens) == (4003, 4000, 0)


def test_split_without_total_falls_back_to_its_sum() -> None:
    usage = {"input_tokens": 1, "output_tokens": 1,
             "cache_creation": {"ephemeral_5m_input_tokens": 7, "ephemeral_1h_input_tokens": 3}}
    got = from_anthropic_body(message(usage)).usage
    assert (got.input_tokens, got.cache_creation_input_tokens) == (11, 10)


def test_thinking_tokens_are_a_subset_of_output() -> None:
    got = from_anthropic_body(message({"input_tokens": 1, "output_tokens": 900,
                                       "output_tokens_details": {"thinking_tokens": 700}})).usage
    assert (got.output_tokens, got.reasoning_output_tokens) == (900, 700)


@pytest.mark.parametrize("usage", [
    {"input_tokens": -5, "cache_read_input_tokens": 10, "output_tokens": 1},  # a negative part cannot hide in a sum
    {"input_tokens": "5", "output_tokens": 1},
    {"input_tokens": 2**40, "cache_read_input_tokens": 2**40, "output_tokens": 1},  # absurd total
    {"input_tokens": 1, "cache_creation_input_tokens": 5, "output_tokens": 1,
     "cache_creation": {"ephemeral_5m_input_tokens": 6, "ephemeral_1h_input_tokens": 0}},  # split > total
    {"input_tokens": 1, "output_tokens": 1, "output_tokens_details": {"thinking_tokens": 2}},
])
def test_bad_data_is_flagged_not_raised(usage: dict[str, Any]) -> None:
    got = from_anthropic_body(message(usage))
    assert got.source is UsageSource.NONE
    assert got.problem.startswith("invalid usage")


def test_error_body_and_non_objects() -> None:
    err = from_anthropic_body(orjson.loads(anthropic_error(529, "Overloaded")))
    assert (err.source, err.problem) == (UsageSource.NONE, "error body: overloaded_error: Overloaded")
    assert from_anthropic_body([DOC_MESSAGE]).source is UsageSource.NONE
    assert "no usage" in from_anthropic_body({**DOC_MESSAGE, "usage": None}).problem


@pytest.mark.parametrize(("status", "err_type"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
    (529, "overloaded_error"), (422, "invalid_request_error"), (502, "api_error"),
])
def test_error_shape_per_status(status: int, err_type: str) -> None:
    body = orjson.loads(anthropic_error(status, "msg", "ignored-param"))
    assert body == {"type": "error", "error": {"type": err_type, "message": "msg"}}


# ---- streams -----------------------------------------------------------------------------------


def event(kind: str, data: dict[str, Any], *, spaced: bool = True) -> bytes:
    """Docs examples use ``json.dumps`` spacing; the live API sends compact JSON. Both must work."""
    payload = json.dumps({"type": kind, **data}) if spaced else orjson.dumps({"type": kind, **data}).decode()
    return f"event: {kind}\ndata: {payload}\n\n".encode()


def doc_stream(start_usage: dict[str, Any], delta_usage: dict[str, Any], *, spaced: bool = True) -> bytes:
    """Streaming guide, "Basic streaming request": the documented event order, ping included."""
    start = {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [],
             "model": "claude-opus-4-1-20250805", "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    return b"".join((
        event("message_start", {"message": start}, spaced=spaced),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}, spaced=spaced),
        event("ping", {}, spaced=spaced),
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hello"}}, spaced=spaced),
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "!"}}, spaced=spaced),
        event("content_block_stop", {"index": 0}, spaced=spaced),
        event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": delta_usage},
              spaced=spaced),
        event("message_stop", {}, spaced=spaced),
    ))


def scan(data: bytes, cuts: list[int] | None = None) -> tuple[AnthropicStream, StreamScanner]:
    reader = AnthropicStream()
    scanner = StreamScanner(reader)
    pos = 0
    for cut in cuts or []:
        scanner.feed(data[pos:pos + cut])
        pos += cut
    scanner.feed(data[pos:])
    scanner.finish()
    return reader, scanner


@given(st.lists(st.integers(1, 80), max_size=12), st.booleans())
def test_documented_stream_output_from_message_delta_input_from_message_start(cuts: list[int], spaced: bool) -> None:
    reader, scanner = scan(doc_stream({"input_tokens": 25, "output_tokens": 1}, {"output_tokens": 15},
                                      spaced=spaced), cuts)
    got = scanner.usage()
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.output_tokens) == (25, 15)  # 15, not 1 + 15
    assert got.model_served == "claude-opus-4-1-20250805"
    assert reader.complete


def test_stream_with_cache_split_and_cumulative_delta_that_repeats_input_counts() -> None:
    """Current API: message_delta repeats the input / cache counts as cumulative totals; never add them."""
    start = {**MIXED_TTL_USAGE, "output_tokens": 1}
    delta = {"input_tokens": 2048, "cache_creation_input_tokens": 248, "cache_read_input_tokens": 1800,
             "output_tokens": 503, "output_tokens_details": {"thinking_tokens": 200}}
    got = scan(doc_stream(start, delta))[1].usage().usage
    assert got.input_tokens == 2048 + 1800 + 248
    assert (got.cache_creation_5m_input_tokens, got.cache_creation_1h_input_tokens) == (148, 100)
    assert (got.output_tokens, got.reasoning_output_tokens) == (503, 200)


def test_server_tools_grow_input_in_message_delta_latest_value_wins() -> None:
    start = {"input_tokens": 400, "cache_read_input_tokens": 0, "output_tokens": 1}
    delta = {"input_tokens": 9000, "output_tokens": 300, "server_tool_use": {"web_search_requests": 1}}
    got = scan(doc_stream(start, delta))[1].usage().usage
    assert (got.input_tokens, got.output_tokens) == (9000, 300)


def test_null_fields_in_message_delta_keep_message_start_values() -> None:
    start = {"input_tokens": 40, "cache_read_input_tokens": 60, "output_tokens": 1}
    delta = {"input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 9}
    got = scan(doc_stream(start, delta))[1].usage().usage
    assert (got.input_tokens, got.cache_read_input_tokens, got.output_tokens) == (100, 60, 9)


def test_stream_cut_before_message_delta_keeps_input_as_estimated() -> None:
    data = doc_stream({"input_tokens": 25, "cache_read_input_tokens": 75, "output_tokens": 1}, {"output_tokens": 15})
    reader, scanner = scan(data[: data.index(b"event: content_block_stop")])
    got = scanner.usage()
    assert got.source is UsageSource.ESTIMATED
    assert (got.usage.input_tokens, got.usage.output_tokens) == (100, 1)
    assert "before message_delta" in got.problem
    assert not reader.complete


def test_in_stream_error_event_is_recorded() -> None:
    data = doc_stream({"input_tokens": 25, "output_tokens": 1}, {"output_tokens": 15})
    cut = data[: data.index(b"event: content_block_stop")]
    error = event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    reader, scanner = scan(cut + error)
    assert "overloaded_error: Overloaded" in scanner.usage().problem
    assert not reader.complete


def test_stream_without_message_start_is_estimated_from_text_deltas() -> None:
    data = doc_stream({"input_tokens": 25, "output_tokens": 1}, {"output_tokens": 15})
    only_text = b"".join(e + b"\n\n" for e in data.split(b"\n\n") if b"content_block_delta" in e)
    got = scan(only_text)[1].usage()
    assert (got.source, got.usage.output_tokens) == (UsageSource.ESTIMATED, 2)  # "Hello!" = 6 bytes


def test_text_of_reads_text_and_tool_input_deltas_only() -> None:
    reader = AnthropicStream()
    assert reader.text_of({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "a"}}) == "a"
    assert reader.text_of({"type": "content_block_delta",
                           "delta": {"type": "input_json_delta", "partial_json": "{\"x\""}}) == "{\"x\""
    assert reader.text_of({"type": "content_block_delta", "delta": {"type": ["x"]}}) == ""
    assert reader.text_of({"type": "message_delta", "delta": {"type": "text_delta", "text": "a"}}) == ""


# ---- properties --------------------------------------------------------------------------------


@st.composite
def anthropic_usage(draw: st.DrawFn) -> dict[str, Any]:
    big = st.integers(0, 2**37)
    usage: dict[str, Any] = {"input_tokens": draw(big), "cache_read_input_tokens": draw(big),
                             "output_tokens": draw(big)}
    five, hour = draw(big), draw(big)
    if draw(st.booleans()):
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}
    usage["cache_creation_input_tokens"] = five + hour + (0 if "cache_creation" in usage else draw(big))
    usage["output_tokens_details"] = {"thinking_tokens": draw(st.integers(0, usage["output_tokens"]))}
    return usage


@given(anthropic_usage())
def test_any_valid_usage_normalizes_to_the_documented_total(usage: dict[str, Any]) -> None:
    got = from_anthropic_body(message(usage))
    assert got.source is UsageSource.REPORTED
    tokens = got.usage
    documented_total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    assert tokens.input_tokens == documented_total
    assert tokens.cache_read_input_tokens + tokens.cache_creation_input_tokens <= tokens.input_tokens
    assert tokens.cache_creation_5m_input_tokens + tokens.cache_creation_1h_input_tokens \
        <= tokens.cache_creation_input_tokens
    assert tokens.reasoning_output_tokens <= tokens.output_tokens == usage["output_tokens"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "message", "usage", "model", "delta", "input_tokens", "output_tokens", "text",
                         "cache_creation", "cache_read_input_tokens", "cache_creation_input_tokens", "error",
                         "ephemeral_5m_input_tokens", "output_tokens_details", "thinking_tokens"])
        | st.text(max_size=6), inner, max_size=5),
    max_leaves=25,
)
KINDS = st.sampled_from(["message_start", "message_delta", "message_stop", "content_block_delta", "error", "ping"])


@given(st.lists(st.tuples(KINDS, JSON, st.booleans()), max_size=8), st.lists(st.integers(1, 64), max_size=6))
def test_random_json_events_give_a_valid_usage_whatever_the_split(events: list[tuple[str, Any, bool]],
                                                                  cuts: list[int]) -> None:
    frames = []
    for kind, value, typed in events:
        payload = {"type": kind, "message": value, "usage": value, "delta": value} if typed else value
        frames.append(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())
    data = b"".join(frames)
    assert check_extracted(scan(data)[1].usage()) == scan(data, cuts)[1].usage()
    for _, value, _ in events:
        check_extracted(from_anthropic_body(value))
        check_extracted(from_anthropic_body({"usage": value}))


@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=6))
def test_random_bytes_give_a_valid_usage_whatever_the_split(data: bytes, cuts: list[int]) -> None:
    assert check_extracted(scan(data)[1].usage()) == scan(data, cuts)[1].usage()
