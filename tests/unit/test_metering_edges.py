"""The edges of metering (issue 14, point 3), in the pure core: each case is a provider's documented shape.

* a 200 stream that carries only the provider's error is an upstream error, kept with its type, never billed;
* a stream that reached its documented end is ``ok`` even if the client hung up at once;
* OpenAI-compatible providers' own usage fields (DeepSeek, xAI, Perplexity, Moonshot, Databricks);
* the diagnosis (problem, error type) reaches the event; implausible usage is flagged, never dropped.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aimeter.events import Status, TokenUsage, UsageFlag, UsageSource
from aimeter.gateway.providers.anthropic import AnthropicStream, from_anthropic_body
from aimeter.gateway.providers.gemini import GeminiStream, from_gemini_body
from aimeter.gateway.providers.ollama import OllamaStream
from aimeter.gateway.providers.openai import OpenAIChatStream, ResponsesStream, from_openai_body, from_responses_body
from aimeter.gateway.sse import StreamScanner
from aimeter.gateway.streams import settle, stream_end, usage_flags, usage_problem
from aimeter.gateway.usage import Extracted, implausible_output
from tests.support.pricer_rows import cost_rows

PROMPT = {"model": "m", "stream": True, "max_tokens": 1024, "messages": [{"role": "user", "content": "x" * 400}]}


def sse(obj: dict[str, Any], name: str = "") -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


def scanned(reader: Any, *frames: bytes, ndjson: bool = False) -> tuple[StreamScanner, Extracted]:
    scanner = StreamScanner(reader, ndjson=ndjson)
    for frame in frames:
        scanner.feed(frame)
    scanner.finish()
    return scanner, scanner.usage()


def ended(scanner: StreamScanner, extracted: Extracted, *, cancelled: bool = False) -> Status:
    return stream_end(framed=True, complete=scanner.complete, cancelled=cancelled, extracted=extracted)[0]


# --- a. a 200 stream that carries only an error ---------------------------------------------------------------

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
GEMINI_UNAVAILABLE = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                                "status": "UNAVAILABLE"}}
FAILED_RESPONSE = {"id": "resp_1", "object": "response", "status": "failed", "model": "gpt-4o-mini", "usage": None,
                   "error": {"code": "server_error", "message": "The server had an error."}}


def error_only_streams() -> list[tuple[str, Any, tuple[bytes, ...], str]]:
    return [
        ("anthropic", AnthropicStream(), (sse(OVERLOADED, "error"),), "overloaded_error"),
        ("gemini", GeminiStream(), (sse(GEMINI_UNAVAILABLE),), "UNAVAILABLE"),
        ("responses-failed", ResponsesStream(), (
            sse({"type": "response.created", "sequence_number": 0,
                 "response": {**FAILED_RESPONSE, "status": "in_progress", "error": None}}, "response.created"),
            sse({"type": "response.failed", "sequence_number": 1, "response": FAILED_RESPONSE}, "response.failed"),
        ), "server_error"),
        ("responses-error-event", ResponsesStream(), (
            sse({"type": "error", "code": "ERR_SOMETHING", "message": "Something went wrong", "param": None,
                 "sequence_number": 1}, "error"),), "ERR_SOMETHING"),
        ("openai-chat", OpenAIChatStream(), (
            sse({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                           "type": "server_error", "param": None, "code": None}}),), "server_error"),
    ]


@pytest.mark.parametrize(("reader", "frames", "error_type"), [c[1:] for c in error_only_streams()],
                         ids=[c[0] for c in error_only_streams()])
def test_a_stream_carrying_only_an_error_is_an_upstream_error_never_billed(reader, frames, error_type):
    scanner, extracted = scanned(reader, *frames)
    assert extracted.error_type == error_type
    assert ended(scanner, extracted) is Status.UPSTREAM_ERROR
    assert ended(scanner, extracted, cancelled=True) is Status.UPSTREAM_ERROR  # the client leaving changes nothing
    final = settle(extracted, PROMPT, stream=True, http_status=200)
    assert final.usage == TokenUsage(), "no estimated prompt for an answer the provider refused"
    assert final.source is UsageSource.NONE
    assert error_type in usage_problem("", final)


def test_ollama_error_line_is_an_upstream_error():
    line = orjson.dumps({"error": "an error was encountered while running the model: unexpected EOF"}) + b"\n"
    scanner, extracted = scanned(OllamaStream(), line, ndjson=True)
    assert extracted.error_type == "error"
    assert ended(scanner, extracted) is Status.UPSTREAM_ERROR
    assert settle(extracted, {"prompt": "x" * 400}, stream=True, http_status=200).usage == TokenUsage()


def test_error_after_content_keeps_what_was_streamed_and_the_error():
    start = {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                   "model": "claude-sonnet-4-6", "content": [],
                                                   "usage": {"input_tokens": 120, "output_tokens": 1}}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello there"}}
    scanner, extracted = scanned(AnthropicStream(), sse(start, "message_start"), sse(delta, "content_block_delta"),
                                 sse(OVERLOADED, "error"))
    assert ended(scanner, extracted) is Status.UPSTREAM_ERROR
    assert extracted.error_type == "overloaded_error"
    assert extracted.usage.input_tokens == 120  # what message_start reported stays, flagged as partial
    assert "overloaded_error" in extracted.problem


def test_whole_error_bodies_carry_the_providers_type():
    assert from_anthropic_body(OVERLOADED).error_type == "overloaded_error"
    assert from_gemini_body(GEMINI_UNAVAILABLE).error_type == "UNAVAILABLE"
    assert from_responses_body(FAILED_RESPONSE).error_type == "server_error"
    rate_limited = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                              "code": "rate_limit_exceeded"}}
    got = from_openai_body(rate_limited)
    assert (got.error_type, got.source) == ("rate_limit_exceeded", UsageSource.NONE)
    assert "Rate limit reached" in got.problem


# --- b. a completed stream is ok ------------------------------------------------------------------------------

def test_a_stream_that_reached_done_is_ok_even_if_the_client_hung_up_at_once():
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [],
             "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
    scanner, extracted = scanned(OpenAIChatStream(), sse(chunk), b"data: [DONE]\n\n")
    assert ended(scanner, extracted, cancelled=True) is Status.OK
    cut, got = scanned(OpenAIChatStream(), sse(chunk))
    assert ended(cut, got, cancelled=True) is Status.CLIENT_CANCELLED
    assert ended(cut, got) is Status.BROKEN_STREAM


@pytest.mark.parametrize(("reader", "last"), [
    (AnthropicStream(), sse({"type": "message_stop"}, "message_stop")),
    (ResponsesStream(), sse({"type": "response.completed", "sequence_number": 9, "response": {
        "object": "response", "status": "completed", "model": "gpt-4o-mini",
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}}, "response.completed")),
    (GeminiStream(), sse({"candidates": [{"content": {"parts": [{"text": "."}]}, "finishReason": "STOP"}],
                          "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}})),
], ids=["anthropic", "responses", "gemini"])
def test_every_apis_documented_end_counts_as_complete(reader, last):
    scanner, extracted = scanned(reader, last)
    assert ended(scanner, extracted, cancelled=True) is Status.OK


# --- c. provider-native usage fields of OpenAI-compatible APIs --------------------------------------------------

def test_deepseek_cache_hits_are_cache_reads():
    """DeepSeek's API reference: prompt_tokens = prompt_cache_hit_tokens + prompt_cache_miss_tokens."""
    body = {"model": "deepseek-chat", "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                                                "prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 100}}
    got = from_openai_body(body)
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens, got.usage.output_tokens) == (1000, 900, 50)
    only_split = {"usage": {"completion_tokens": 50, "prompt_cache_hit_tokens": 900, "prompt_cache_miss_tokens": 100}}
    assert from_openai_body(only_split).usage.input_tokens == 1000


def test_deepseek_reasoner_reasoning_is_inside_completion():
    body = {"usage": {"prompt_tokens": 20, "completion_tokens": 300, "total_tokens": 320,
                      "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 20,
                      "completion_tokens_details": {"reasoning_tokens": 250}}}
    usage = from_openai_body(body).usage
    assert (usage.output_tokens, usage.reasoning_output_tokens) == (300, 250)


def test_xai_reasoning_is_outside_completion():
    """xAI's reasoning guide (and genai-prices' x-ai extractor): total = prompt + completion + reasoning."""
    body = {"model": "grok-4", "usage": {
        "prompt_tokens": 663, "completion_tokens": 50, "total_tokens": 837, "num_sources_used": 0,
        "prompt_tokens_details": {"text_tokens": 663, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 654},
        "completion_tokens_details": {"reasoning_tokens": 124, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0}}}
    got = from_openai_body(body)
    assert got.source is UsageSource.REPORTED, got.problem
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens) == (663, 654)
    assert (got.usage.output_tokens, got.usage.reasoning_output_tokens) == (174, 124)


def test_xai_legacy_top_level_fields():
    body = {"usage": {"prompt_tokens": 2341, "completion_tokens": 31, "total_tokens": 3108, "prompt_text_tokens": 2341,
                      "reasoning_tokens": 736, "cached_prompt_text_tokens": 448}}
    usage = from_openai_body(body).usage
    assert (usage.cache_read_input_tokens, usage.output_tokens, usage.reasoning_output_tokens) == (448, 767, 736)


def test_perplexity_reasoning_tokens_sit_beside_completion():
    body = {"usage": {"prompt_tokens": 30, "completion_tokens": 500, "total_tokens": 4530, "reasoning_tokens": 4000,
                      "citation_tokens": 0, "num_search_queries": 3}}
    usage = from_openai_body(body).usage
    assert (usage.output_tokens, usage.reasoning_output_tokens) == (4500, 4000)


def test_an_aggregator_that_counts_reasoning_inside_completion_is_not_double_counted():
    body = {"usage": {"prompt_tokens": 163, "completion_tokens": 241, "total_tokens": 404,
                      "completion_tokens_details": {"reasoning_tokens": 204},
                      "prompt_tokens_details": {"cached_tokens": 162}}}
    usage = from_openai_body(body).usage
    assert (usage.output_tokens, usage.reasoning_output_tokens) == (241, 204)


def test_moonshot_and_databricks_top_level_cache_fields():
    moonshot = {"usage": {"prompt_tokens": 2000, "completion_tokens": 10, "total_tokens": 2010, "cached_tokens": 1536}}
    assert from_openai_body(moonshot).usage.cache_read_input_tokens == 1536
    databricks = {"usage": {"prompt_tokens": 500, "completion_tokens": 80, "total_tokens": 580,
                            "cache_read_input_tokens": 400, "reasoning_tokens": 60}}
    usage = from_openai_body(databricks).usage
    assert (usage.cache_read_input_tokens, usage.output_tokens, usage.reasoning_output_tokens) == (400, 80, 60)


def test_perplexity_responses_cache_reads():
    body = {"object": "response", "status": "completed", "usage": {
        "input_tokens": 900, "output_tokens": 40, "input_tokens_details": {"cache_read_input_tokens": 700}}}
    assert from_responses_body(body).usage.cache_read_input_tokens == 700


# --- d. the diagnosis reaches the event ----------------------------------------------------------------------

def test_usage_problem_joins_the_gateways_and_the_readers_reasons_once():
    got = Extracted(TokenUsage(), UsageSource.NONE, problem="stream carried no usage")
    assert usage_problem("stream ended before its documented end", got) == (
        "stream ended before its documented end; stream carried no usage")
    assert usage_problem("x", Extracted(TokenUsage(), UsageSource.NONE, problem="x")) == "x"
    assert len(usage_problem("p" * 2000, got)) == 512


# --- e. implausible usage is flagged, not dropped --------------------------------------------------------------

@pytest.mark.parametrize(("request_body", "usage", "flagged"), [
    ({"max_tokens": 100}, TokenUsage(output_tokens=5000), True),
    ({"max_tokens": 100}, TokenUsage(output_tokens=100), False),
    ({"max_completion_tokens": 100, "max_tokens": 999999}, TokenUsage(output_tokens=5000), True),
    ({"max_tokens": 100, "n": 4}, TokenUsage(output_tokens=400), False),  # completion tokens of all choices
    ({"max_output_tokens": 64}, TokenUsage(output_tokens=1000), True),  # Responses API
    ({"options": {"num_predict": 32}}, TokenUsage(output_tokens=900), True),  # Ollama
    ({"options": {"num_predict": -1}}, TokenUsage(output_tokens=900), False),
    ({"generationConfig": {"maxOutputTokens": 50}}, TokenUsage(output_tokens=2000), True),
    # Gemini: thoughts are not compared (whether they count against maxOutputTokens differs by model)
    ({"generationConfig": {"maxOutputTokens": 50}}, TokenUsage(output_tokens=2050, reasoning_output_tokens=2000),
     False),
    ({}, TokenUsage(output_tokens=10**6), False),
])
def test_output_far_above_max_tokens_is_flagged(request_body, usage, flagged):
    assert bool(implausible_output(request_body, usage)) is flagged


def test_the_flag_keeps_the_reported_numbers():
    got = Extracted(TokenUsage(input_tokens=10, output_tokens=5000), UsageSource.REPORTED)
    final = settle(got, {"max_tokens": 100}, stream=False, http_status=200)
    assert final.usage == got.usage
    assert usage_flags(final) == UsageFlag.OUTPUT_OVER_MAX_TOKENS


def test_usage_that_decreases_within_a_stream_is_flagged():
    def chunk(prompt: int, candidates: int) -> bytes:
        return sse({"candidates": [{"content": {"parts": [{"text": "a"}]}}],
                    "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": candidates}})

    _, gemini = scanned(GeminiStream(), chunk(100, 10), chunk(100, 20), chunk(100, 5))
    assert usage_flags(gemini) == UsageFlag.USAGE_DECREASED
    assert gemini.usage.output_tokens == 5  # kept as reported (the last running count), only flagged
    _, steady = scanned(GeminiStream(), chunk(100, 10), chunk(100, 20))
    assert usage_flags(steady) == ""

    start = {"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 50, "output_tokens": 1}}}
    _, anthropic = scanned(AnthropicStream(), sse(start, "message_start"),
                           sse({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 40}}, "message_delta"),
                           sse({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 12}}, "message_delta"),
                           sse({"type": "message_stop"}, "message_stop"))
    assert usage_flags(anthropic) == UsageFlag.USAGE_DECREASED

    def running(completion: int) -> bytes:  # vLLM's continuous_usage_stats: usage on every chunk
        return sse({"model": "llama", "choices": [{"index": 0, "delta": {"content": "a"}}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": completion, "total_tokens": 9 + completion}})

    _, vllm = scanned(OpenAIChatStream(), running(1), running(2), running(1), b"data: [DONE]\n\n")
    assert usage_flags(vllm) == UsageFlag.USAGE_DECREASED


def test_an_error_only_200_stream_is_a_true_zero_not_unmetered():
    """The pricer's `unmetered` (2xx, no readable usage: the provider billed what we could not count) is not a
    stream that carried only the provider's error: status upstream_error, nothing billed, $0 on both paths."""
    from datetime import UTC, datetime  # noqa: PLC0415
    from decimal import Decimal  # noqa: PLC0415

    from aimeter.config import parse_config  # noqa: PLC0415
    from aimeter.events import UsageEvent  # noqa: PLC0415
    from aimeter.pricer.pricebook import PRICED, UNMETERED, PriceBook  # noqa: PLC0415
    from aimeter.pricer.rows import build_batch  # noqa: PLC0415

    book = PriceBook(parse_config("""
backends:
  anthropic: {kind: anthropic, base_url: "https://api.anthropic.com", deployment: proprietary, provider: anthropic}
models:
  claude-sonnet-4-5: {backend: anthropic}
"""))
    at = datetime(2026, 12, 1, tzinfo=UTC)

    def event(status: str) -> UsageEvent:
        return UsageEvent(event_id="0193a6f0-0000-7000-8000-000000000014", started_at=at, ended_at=at,
                          api="anthropic.messages", backend="anthropic", provider="anthropic",
                          deployment="proprietary", model_requested="claude-sonnet-4-5", stream=True, status=status,
                          http_status=200, usage_source="none", upstream_error_type="overloaded_error")

    refused = event("upstream_error")
    assert (book.price(refused).pricing_status, book.price(refused).cost_usd) == (PRICED, Decimal(0))
    for fast in (True, False):
        row = cost_rows(build_batch([refused.model_dump_json().encode()], book, at, fast=fast))[0]
        assert (row[23], row[19]) == (PRICED, Decimal(0))
    assert book.price(event("ok")).pricing_status == UNMETERED  # an answer with unreadable usage still is


def test_groq_stream_usage_in_x_groq():
    """Groq's streams carry the usage in the last chunk's ``x_groq`` object."""
    last = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama-3.3-70b-versatile",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "x_groq": {"id": "req_1", "usage": {"queue_time": 0.02, "prompt_tokens": 24, "prompt_time": 0.001,
                                                "completion_tokens": 9, "completion_time": 0.01, "total_tokens": 33,
                                                "total_time": 0.011}}}
    scanner, got = scanned(OpenAIChatStream(), sse(last), b"data: [DONE]\n\n")
    assert (got.source, got.usage.input_tokens, got.usage.output_tokens) == (UsageSource.REPORTED, 24, 9)
    assert ended(scanner, got) is Status.OK
