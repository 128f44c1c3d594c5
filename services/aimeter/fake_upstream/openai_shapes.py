"""Pure builders of OpenAI Chat Completions wire objects for the fake upstream.

The shapes follow OpenAI's API reference for the chat completion object, the chat
completion chunk object, `stream_options` (`include_usage`, `include_obfuscation`) and
the error object, so the gateway meets here exactly what it meets in production. Nothing
in this module does I/O or reads the clock: the caller passes ids and timestamps in.

Streams are hot in the benchmarks, so content frames are encoded by splicing cached,
JSON-encoded text pieces into a chunk template serialized once per request, instead of
serializing one dict per chunk. Value types are NamedTuples: immutable and the cheapest
to build per request.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import orjson

SYSTEM_FINGERPRINT = "fp_f4ke0b5e11"
SERVICE_TIER = "default"
# Real chunks carry a random-length padding string; a constant one keeps output reproducible.
OBFUSCATION = "fAk3pAd"
DONE_FRAME = b"data: [DONE]\n\n"

_MARK = "\x00fake-piece\x00"
_MARK_JSON = orjson.dumps(_MARK)

JsonDict = dict[str, Any]


class Usage(NamedTuple):
    """Token counts of one answer; `cached` is a subset of `prompt`, `reasoning` of `completion`."""

    prompt: int
    completion: int
    cached: int = 0
    reasoning: int = 0


class Envelope(NamedTuple):
    """Fields every object of one answer shares: id, creation time and the served model."""

    id: str
    created: int
    model: str


class StreamStyle(NamedTuple):
    """The request's `stream_options`: where `usage` and `obfuscation` appear."""

    include_usage: bool = False
    obfuscate: bool = True


def usage_object(usage: Usage) -> JsonDict:
    """OpenAI's `usage`: `prompt_tokens` includes cached tokens, as the API reports them."""
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_object(env: Envelope, content: str, finish_reason: str, usage: Usage) -> JsonDict:
    """A non-streaming `chat.completion` with one assistant choice."""
    message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    return {
        "id": env.id,
        "object": "chat.completion",
        "created": env.created,
        "model": env.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_object(usage),
        "service_tier": SERVICE_TIER,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def chunk_object(env: Envelope, style: StreamStyle, choices: list[JsonDict], usage: Usage | None = None) -> JsonDict:
    """A `chat.completion.chunk`; `usage` is present (null but on the last) only if requested."""
    chunk: JsonDict = {
        "id": env.id,
        "object": "chat.completion.chunk",
        "created": env.created,
        "model": env.model,
        "service_tier": SERVICE_TIER,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
    }
    if style.include_usage:
        chunk["usage"] = None if usage is None else usage_object(usage)
    if style.obfuscate:
        chunk["obfuscation"] = OBFUSCATION
    return chunk


def delta_choice(delta: JsonDict, finish_reason: str | None = None) -> JsonDict:
    """The single streamed choice carrying `delta`."""
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def sse_frame(obj: JsonDict) -> bytes:
    """One server-sent event as OpenAI frames it: a `data:` line and a blank line."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream_head(env: Envelope, style: StreamStyle) -> bytes:
    """The first frame: the assistant role with empty content, as OpenAI sends it."""
    role = {"role": "assistant", "content": "", "refusal": None}
    return sse_frame(chunk_object(env, style, [delta_choice(role)]))


def stream_content(env: Envelope, style: StreamStyle, pieces: tuple[bytes, ...]) -> list[bytes]:
    """One frame per content delta, spliced into a template serialized once."""
    template = sse_frame(chunk_object(env, style, [delta_choice({"content": _MARK})]))
    before, after = template.split(_MARK_JSON)
    return [before + piece + after for piece in pieces]


def stream_tail(env: Envelope, style: StreamStyle, finish_reason: str, usage: Usage) -> bytes:
    """Finish frame, the usage-only frame (`choices: []`) if requested, then `[DONE]`."""
    tail = sse_frame(chunk_object(env, style, [delta_choice({}, finish_reason)]))
    if style.include_usage:
        tail += sse_frame(chunk_object(env, style, [], usage))
    return tail + DONE_FRAME


@lru_cache(maxsize=64)
def _words(count: int) -> tuple[str, ...]:
    """Deterministic filler words `tok0 tok1 …`; cached because benchmarks repeat counts."""
    return tuple(f"tok{i}" for i in range(count))


@lru_cache(maxsize=64)
def content_text(words: int) -> str:
    """The full assistant text of `words` words; equals the concatenated stream deltas."""
    return " ".join(_words(words))


@lru_cache(maxsize=64)
def content_pieces(words: int, chunks: int) -> tuple[bytes, ...]:
    """`content_text(words)` split into `chunks` JSON-encoded deltas of near-equal word counts."""
    all_words = _words(words)
    pieces: list[bytes] = []
    for i in range(chunks):
        part = " ".join(all_words[i * words // chunks : (i + 1) * words // chunks])
        pieces.append(orjson.dumps(part if i == 0 else " " + part))
    return tuple(pieces)


# status -> (type, code, message); per OpenAI's error-codes guide. `{model}` is filled in.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Simulated bad request (fake upstream)."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-fake. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: (
        "service_unavailable_error",
        "server_is_overloaded",
        "The requested model does not have enough capacity to process your request at the moment.",
    ),
}


def error_object(message: str, err_type: str, param: str | None = None, code: str | None = None) -> JsonDict:
    """OpenAI's error envelope: `{"error": {message, type, param, code}}`."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def simulated_error(status: int, model: str) -> JsonDict:
    """The error body OpenAI documents for `status`; other 4xx/5xx get a generic one."""
    known = _ERRORS.get(status)
    if known is None:
        err_type = "invalid_request_error" if status < 500 else "server_error"
        return error_object(f"Simulated HTTP {status} error (fake upstream).", err_type)
    err_type, code, message = known
    return error_object(message.replace("{model}", model), err_type, None, code)
