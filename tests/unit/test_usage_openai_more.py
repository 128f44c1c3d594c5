"""OpenAI Responses, Embeddings and legacy Completions usage, against the shapes OpenAI documents.

Streams are driven through the gateway's ``StreamScanner`` as real SSE bytes, split at random points.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from aimeter.events import UsageSource
from aimeter.gateway.providers.openai import (
    OpenAICompletionsStream,
    ResponsesStream,
    from_completions_body,
    from_embeddings_body,
    from_openai_body,
    from_responses_body,
)
from aimeter.gateway.sse import StreamScanner
from tests.support.usage_checks import check_extracted

# API reference, "The response object" (Responses API), verbatim apart from the elided text.
DOC_RESPONSE: dict[str, Any] = {
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41", "object": "response", "created_at": 1741476777,
    "status": "completed", "error": None, "incomplete_details": None, "instructions": None,
    "max_output_tokens": None, "model": "gpt-4o-2024-08-06",
    "output": [{"type": "message", "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
                "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "In a peaceful grove…", "annotations": []}]}],
    "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
    "store": True, "temperature": 1, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
    "top_p": 1, "truncation": "disabled",
    "usage": {"input_tokens": 328, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 52,
              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 380},
    "user": None, "metadata": {},
}
# Reasoning guide: a reasoning model's usage, reasoning tokens inside output_tokens.
REASONING_USAGE = {"input_tokens": 75, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 1186,
                   "output_tokens_details": {"reasoning_tokens": 1024}, "total_tokens": 1261}
# Prompt-caching guide: cached tokens are part of input_tokens.
CACHED_USAGE = {"input_tokens": 2006, "input_tokens_details": {"cached_tokens": 1920}, "output_tokens": 300,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 2306}
# Embeddings API reference example.
DOC_EMBEDDINGS = {"object": "list", "data": [{"object": "embedding", "embedding": [0.0023064255, -0.009327292],
                                              "index": 0}],
                  "model": "text-embedding-ada-002", "usage": {"prompt_tokens": 8, "total_tokens": 8}}
# Legacy Completions API reference example.
DOC_COMPLETION = {"id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7", "object": "text_completion", "created": 1589478378,
                  "model": "gpt-3.5-turbo-instruct", "system_fingerprint": "fp_44709d6fcb",
                  "choices": [{"text": "\n\nThis is indeed a test", "index": 0, "logprobs": None,
                               "finish_reason": "length"}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


def with_usage(usage: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**DOC_RESPONSE, "usage": usage, **fields}


def test_responses_documented_example() -> None:
    got = from_responses_body(DOC_RESPONSE)
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.output_tokens) == (328, 52)
    assert got.model_served == "gpt-4o-2024-08-06"
    assert got.problem == ""


def test_responses_cached_tokens_are_a_subset_of_input_tokens() -> None:
    got = from_responses_body(with_usage(CACHED_USAGE)).usage
    assert (got.input_tokens, got.cache_read_input_tokens) == (2006, 1920)  # not 2006 + 1920


def test_responses_reasoning_tokens_are_a_subset_of_output_tokens() -> None:
    got = from_responses_body(with_usage(REASONING_USAGE)).usage
    assert (got.output_tokens, got.reasoning_output_tokens) == (1186, 1024)


def test_responses_cache_writes_are_a_subset_of_input_without_ttl_split() -> None:
    usage = {**CACHED_USAGE, "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 900,
                                                      "cache_write_tokens_details": {"ttl_30m_tokens": 900,
                                                                                     "ttl_12h_tokens": 0}}}
    got = from_responses_body(with_usage(usage)).usage
    assert (got.input_tokens, got.cache_read_input_tokens, got.cache_creation_input_tokens) == (2006, 1000, 900)
    assert (got.cache_creation_5m_input_tokens, got.cache_creation_1h_input_tokens) == (0, 0)


def test_chat_cache_write_tokens_are_a_subset_of_prompt_tokens() -> None:
    body = {"model": "m", "usage": {"prompt_tokens": 100, "completion_tokens": 1,
                                    "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 40}}}
    got = from_openai_body(body).usage
    assert (got.input_tokens, got.cache_read_input_tokens, got.cache_creation_input_tokens) == (100, 50, 40)


def test_responses_incomplete_and_failed_keep_usage_and_say_why() -> None:
    incomplete = from_responses_body(with_usage(REASONING_USAGE, status="incomplete",
                                                incomplete_details={"reason": "max_output_tokens"}))
    assert incomplete.source is UsageSource.REPORTED
    assert incomplete.problem == "response incomplete: max_output_tokens"
    failed = from_responses_body(with_usage(REASONING_USAGE, status="failed",
                                            error={"code": "server_error", "message": "boom"}))
    assert failed.usage.output_tokens == 1186
    assert "response failed: server_error: boom" in failed.problem


def test_responses_bad_data_is_flagged() -> None:
    assert from_responses_body(with_usage({"input_tokens": -1})).source is UsageSource.NONE
    assert from_responses_body(with_usage({"input_tokens": 2**41})).source is UsageSource.NONE
    assert from_responses_body(with_usage({"input_tokens": "5"})).source is UsageSource.NONE
    over = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 11}}
    assert "exceed" in from_responses_body(with_usage(over)).problem
    assert from_responses_body(with_usage(None)).source is UsageSource.NONE
    assert from_responses_body("resp").source is UsageSource.NONE


def test_embeddings_are_all_input() -> None:
    got = from_embeddings_body(DOC_EMBEDDINGS)
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.REPORTED, 8, 0)
    assert got.model_served == "text-embedding-ada-002"
    assert from_embeddings_body({"usage": {"prompt_tokens": True}}).source is UsageSource.NONE


def test_legacy_completions_use_chat_usage() -> None:
    got = from_completions_body(DOC_COMPLETION)
    assert (got.usage.input_tokens, got.usage.output_tokens, got.model_served) == (5, 7, "gpt-3.5-turbo-instruct")


# ---- streams, through the scanner --------------------------------------------------------------


def event(kind: str, **fields: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


def responses_stream_bytes(final_kind: str = "response.completed", usage: Any = None) -> bytes:
    """Streaming guide's sequence: created, in_progress, items, text deltas, text done, terminal event."""
    started = {**DOC_RESPONSE, "status": "in_progress", "output": [], "usage": None}
    done = {**DOC_RESPONSE, "status": final_kind.removeprefix("response."), "usage": usage or CACHED_USAGE}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return b"".join((
        event("response.created", response=started, sequence_number=0),
        event("response.in_progress", response=started, sequence_number=1),
        event("response.output_item.added", output_index=0, item={"id": "msg_1", "type": "message"},
              sequence_number=2),
        event("response.output_text.delta", **where, delta="Hi", sequence_number=3),
        event("response.output_text.delta", **where, delta=' "usage": {"x": 1} there', sequence_number=4),
        event("response.output_text.done", **where, text="Hi there", sequence_number=5),
        event(final_kind, response=done, sequence_number=6),
    ))


def scan(reader: Any, data: bytes, cuts: list[int] | None = None, *, ndjson: bool = False) -> StreamScanner:
    scanner = StreamScanner(reader, ndjson=ndjson)
    pos = 0
    for cut in cuts or []:
        assert scanner.feed(data[pos:pos + cut]) == data[pos:pos + cut]
        pos += cut
    scanner.feed(data[pos:])
    scanner.finish()
    return scanner


@given(st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_responses_stream_usage_from_completed_event_whatever_the_split(cuts: list[int]) -> None:
    reader = ResponsesStream()
    got = scan(reader, responses_stream_bytes(), cuts).usage()
    assert got.source is UsageSource.REPORTED
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens, got.usage.output_tokens) == (2006, 1920, 300)
    assert got.model_served == "gpt-4o-2024-08-06"
    assert reader.complete


def test_responses_stream_incomplete_and_failed_events_carry_usage() -> None:
    for kind in ("response.incomplete", "response.failed"):
        reader = ResponsesStream()
        got = scan(reader, responses_stream_bytes(kind, REASONING_USAGE)).usage()
        assert (got.source, got.usage.reasoning_output_tokens) == (UsageSource.REPORTED, 1024)
        assert reader.complete


def test_responses_stream_cut_before_the_end_is_estimated_from_deltas() -> None:
    data = responses_stream_bytes()
    cut = data[: data.index(b"event: response.output_text.done")]
    got = scan(ResponsesStream(), cut).usage()
    assert got.source is UsageSource.ESTIMATED
    assert got.usage.output_tokens >= 1
    assert got.model_served == "gpt-4o-2024-08-06"


def test_responses_stream_error_event_is_recorded() -> None:
    data = responses_stream_bytes()[:200] + b"\n\n" + event("error", code="server_error", message="boom",
                                                            sequence_number=9)
    reader = ResponsesStream()
    got = scan(reader, data).usage()
    assert "boom" in got.problem
    assert not reader.complete


def completion_chunk(text: str | None, usage: dict[str, Any] | None = None) -> bytes:
    """API reference's legacy Completions chunk; the usage-only chunk has ``choices: []``."""
    body: dict[str, Any] = {"id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe", "object": "text_completion",
                            "created": 1690759702, "model": "gpt-3.5-turbo-instruct",
                            "system_fingerprint": "fp_44709d6fcb",
                            "choices": [] if text is None else [{"text": text, "index": 0, "logprobs": None,
                                                                 "finish_reason": None}]}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def test_completions_stream_reads_final_usage_and_text() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    data = completion_chunk("This") + completion_chunk(" is") + completion_chunk(None, usage) + b"data: [DONE]\n\n"
    got = scan(OpenAICompletionsStream(), data).usage()
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.REPORTED, 5, 7)
    cancelled = scan(OpenAICompletionsStream(), completion_chunk("one two three four five six seven")).usage()
    assert cancelled.source is UsageSource.ESTIMATED
    assert cancelled.usage.output_tokens == 9  # ceil(33 bytes / 4)


# ---- properties --------------------------------------------------------------------------------


@st.composite
def responses_usage(draw: st.DrawFn) -> dict[str, Any]:
    total_in, total_out = draw(st.integers(0, 2**39)), draw(st.integers(0, 2**39))
    cached = draw(st.integers(0, total_in))
    written = draw(st.integers(0, total_in - cached))
    reasoning = draw(st.integers(0, total_out))
    return {"input_tokens": total_in, "output_tokens": total_out, "total_tokens": total_in + total_out,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens_details": {"reasoning_tokens": reasoning}}


@given(responses_usage())
def test_any_valid_responses_usage_maps_with_subsets_inside_totals(usage: dict[str, Any]) -> None:
    got = from_responses_body({"model": "m", "usage": usage})
    assert got.source is UsageSource.REPORTED
    tokens = got.usage
    assert tokens.input_tokens == usage["input_tokens"]
    assert tokens.cache_read_input_tokens + tokens.cache_creation_input_tokens <= tokens.input_tokens
    assert tokens.reasoning_output_tokens <= tokens.output_tokens == usage["output_tokens"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "response", "usage", "model", "delta", "status", "input_tokens", "output_tokens",
                         "input_tokens_details", "cached_tokens", "choices", "text", "message", "code"])
        | st.text(max_size=6), inner, max_size=5),
    max_leaves=25,
)
EVENT_NAMES = st.sampled_from(["response.created", "response.completed", "response.failed", "response.incomplete",
                               "response.output_text.delta", "error", "", "message"])


@given(st.lists(st.tuples(EVENT_NAMES, JSON), max_size=8), st.lists(st.integers(1, 64), max_size=6))
def test_random_json_events_give_the_openai_readers_a_valid_usage_whatever_the_split(
        events: list[tuple[str, Any]], cuts: list[int]) -> None:
    data = b"".join(b"event: " + name.encode() + b"\ndata: " + json.dumps(value).encode() + b"\n\n"
                    for name, value in events)
    for make in (ResponsesStream, OpenAICompletionsStream):
        assert check_extracted(scan(make(), data).usage()) == scan(make(), data, cuts).usage()
    for value in [v for _, v in events]:
        check_extracted(from_responses_body(value))
        check_extracted(from_embeddings_body(value))
        check_extracted(from_completions_body(value))


@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=6))
def test_random_bytes_give_the_openai_readers_a_valid_usage_whatever_the_split(data: bytes, cuts: list[int]) -> None:
    for make in (ResponsesStream, OpenAICompletionsStream):
        assert check_extracted(scan(make(), data).usage()) == scan(make(), data, cuts).usage()
