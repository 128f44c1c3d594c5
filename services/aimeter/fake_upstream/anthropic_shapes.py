"""Pure builders of Anthropic Messages objects (``POST /v1/messages``) for the fake upstream.

Shapes follow Anthropic's API reference (Message object, streaming Messages, errors). Usage is in
Anthropic's OWN semantics: ``input_tokens`` EXCLUDES cache reads and writes, which are reported as
``cache_read_input_tokens`` / ``cache_creation_input_tokens`` with the ``cache_creation`` TTL split;
``output_tokens_details.thinking_tokens`` is the reasoning part of ``output_tokens``.

The stream is the documented sequence ``message_start`` → ``content_block_start`` → ``ping`` →
``content_block_delta``… → ``content_block_stop`` → ``message_delta`` → ``message_stop``.
``message_start`` carries the input counts and a provisional ``output_tokens``; ``message_delta``
carries cumulative totals (input counts repeated, as the current API sends them), so a reader that
adds them instead of taking the latest value double counts and is caught.
"""

from __future__ import annotations

from typing import NamedTuple

from aimeter.fake_upstream.common import JsonDict, StreamParts, Usage, content_text, sse_event, text_pieces
from aimeter.fake_upstream.plan import Plan

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}

# HTTP status -> error type, from Anthropic's errors page (docs.anthropic.com/en/api/errors). The fake keeps its
# own copy on purpose: were it to import the gateway's table, a wrong mapping would be agreed on by both sides.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

# status -> message, in the style of Anthropic's errors page; `{model}` is filled in.
_MESSAGES = {
    400: "Simulated bad request (fake upstream).",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "model: {model}",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit.",
    500: "Internal server error",
    529: "Overloaded",
}


class Ids(NamedTuple):
    message: str
    request: str


def _input_fields(usage: Usage) -> JsonDict:
    return {
        "input_tokens": usage.uncached,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
    }


def usage_object(usage: Usage, output_tokens: int | None = None) -> JsonDict:
    """A Message's `usage`; `output_tokens` overrides the count (message_start's provisional one)."""
    obj: JsonDict = {
        **_input_fields(usage),
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": usage.completion if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }
    if usage.reasoning and output_tokens is None:
        obj["output_tokens_details"] = {"thinking_tokens": usage.reasoning}
    return obj


def delta_usage(usage: Usage) -> JsonDict:
    """`message_delta` usage: cumulative totals, cache fields repeated, no `cache_creation` split."""
    obj: JsonDict = {**_input_fields(usage), "output_tokens": usage.completion}
    if usage.reasoning:
        obj["output_tokens_details"] = {"thinking_tokens": usage.reasoning}
    return obj


def message_object(ids: Ids, plan: Plan, content: list[JsonDict], usage: JsonDict, stop: str | None) -> JsonDict:
    return {"id": ids.message, "type": "message", "role": "assistant", "model": plan.model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": usage}


def whole(ids: Ids, plan: Plan) -> JsonDict:
    text = [{"type": "text", "text": content_text(plan.words)}]
    return message_object(ids, plan, text, usage_object(plan.usage), STOP_REASONS[plan.finish_reason])


def stream(ids: Ids, plan: Plan) -> StreamParts:
    """The documented event sequence; `error` is the in-stream `overloaded_error` event."""
    start = message_object(ids, plan, [], usage_object(plan.usage, min(1, plan.usage.completion)), None)
    head = b"".join((
        sse_event("message_start", {"type": "message_start", "message": start}),
        sse_event("content_block_start",
                  {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        sse_event("ping", {"type": "ping"}),
    ))
    content = [
        sse_event("content_block_delta",
                  {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})
        for piece in text_pieces(plan.words, plan.chunks)
    ]
    delta = {"stop_reason": STOP_REASONS[plan.finish_reason], "stop_sequence": None}
    tail = b"".join((
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage(plan.usage)}),
        sse_event("message_stop", {"type": "message_stop"}),
    ))
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return StreamParts(head, content, tail, sse_event("error", overloaded))


def error_object(status: int, message: str, request_id: str) -> JsonDict:
    """Anthropic's error shape: `{"type": "error", "error": {type, message}, "request_id"}`."""
    err_type = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": err_type, "message": message}, "request_id": request_id}


def simulated_error(status: int, model: str, request_id: str) -> JsonDict:
    """The error body for `status=`; unlisted statuses get a generic message."""
    message = _MESSAGES.get(status, f"Simulated HTTP {status} error (fake upstream).").replace("{model}", model)
    return error_object(status, message, request_id)
