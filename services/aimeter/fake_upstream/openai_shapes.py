"""Pure builders of OpenAI wire objects for the fake upstream: Chat, legacy Completions, Embeddings.

The shapes follow OpenAI's API reference for the chat completion object, the chat
completion chunk object, `stream_options` (`include_usage`, `include_obfuscation`), the legacy
`text_completion` object, the embeddings `list` object and the error object, so the gateway
meets here exactly what it meets in production. `timings` follows llama.cpp server's answer
(OpenAI-compatible self-hosted flavour). Nothing in this module does I/O or reads the clock:
the caller passes ids and timestamps in.

Streams are hot in the benchmarks, so content frames are encoded by splicing cached,
JSON-encoded text pieces into a chunk template serialized once per request, instead of
serializing one dict per chunk. Value types are NamedTuples: immutable and the cheapest
to build per request.
"""

from __future__ import annotations

import base64
import struct
from typing import NamedTuple

import orjson

from aimeter.fake_upstream.common import JsonDict, Usage, generation_ms, prompt_ms, sse

SYSTEM_FINGERPRINT = "fp_f4ke0b5e11"
SERVICE_TIER = "default"
# Real chunks carry a random-length padding string; a constant one keeps output reproducible.
OBFUSCATION = "fAk3pAd"
DONE_FRAME = b"data: [DONE]\n\n"

_MARK = "\x00fake-piece\x00"
_MARK_JSON = orjson.dumps(_MARK)


class Envelope(NamedTuple):
    """Fields every object of one answer shares: id, creation time and the served model."""

    id: str
    created: int
    model: str


class StreamStyle(NamedTuple):
    """The request's `stream_options`: where `usage` and `obfuscation` appear; `dialect`: whose usage fields."""

    include_usage: bool = False
    obfuscate: bool = True
    dialect: str = ""  # "" (OpenAI), or an OpenAI-compatible provider that reports usage its own way (DIALECTS)


def deepseek_usage(usage: Usage) -> JsonDict:
    """DeepSeek's `usage` (API reference, context-caching guide): cache hits and misses in its own top-level
    fields, `prompt_cache_hit_tokens + prompt_cache_miss_tokens = prompt_tokens`; no `prompt_tokens_details`."""
    obj: JsonDict = {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_cache_hit_tokens": usage.cached,
        "prompt_cache_miss_tokens": usage.prompt - usage.cached,
    }
    if usage.reasoning:  # deepseek-reasoner: reasoning inside completion_tokens, as OpenAI counts it
        obj["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return obj


def xai_usage(usage: Usage) -> JsonDict:
    """xAI's `usage` (reasoning guide): `completion_tokens` EXCLUDES `reasoning_tokens`, and `total_tokens` is
    prompt + completion + reasoning; cached tokens inside `prompt_tokens_details` as OpenAI's."""
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion - usage.reasoning,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"text_tokens": usage.prompt, "audio_tokens": 0, "image_tokens": 0,
                                  "cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        "num_sources_used": 0,
    }


DIALECTS = {"deepseek": deepseek_usage, "xai": xai_usage}


def usage_object(usage: Usage, dialect: str = "") -> JsonDict:
    """OpenAI's `usage`: `prompt_tokens` includes cached (and cache-write) tokens, as the API reports them."""
    if dialect:
        return DIALECTS[dialect](usage)
    prompt_details = {"cached_tokens": usage.cached, "audio_tokens": 0}
    if usage.cache_write:
        prompt_details["cache_write_tokens"] = usage.cache_write
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion_object(env: Envelope, content: str, finish_reason: str, usage: Usage, dialect: str = "") -> JsonDict:
    """A non-streaming `chat.completion` with one assistant choice."""
    message: JsonDict = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    return {
        "id": env.id,
        "object": "chat.completion",
        "created": env.created,
        "model": env.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_object(usage, dialect),
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
        chunk["usage"] = None if usage is None else usage_object(usage, style.dialect)
    if style.obfuscate:
        chunk["obfuscation"] = OBFUSCATION
    return chunk


def delta_choice(delta: JsonDict, finish_reason: str | None = None) -> JsonDict:
    """The single streamed choice carrying `delta`."""
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def sse_frame(obj: JsonDict) -> bytes:
    """One server-sent event as OpenAI frames it: a `data:` line and a blank line."""
    return sse(obj)


def stream_head(env: Envelope, style: StreamStyle) -> bytes:
    """The first frame: the assistant role with empty content, as OpenAI sends it."""
    role = {"role": "assistant", "content": "", "refusal": None}
    return sse_frame(chunk_object(env, style, [delta_choice(role)]))


def stream_content(env: Envelope, style: StreamStyle, pieces: tuple[bytes, ...]) -> list[bytes]:
    """One frame per content delta, spliced into a template serialized once."""
    template = sse_frame(chunk_object(env, style, [delta_choice({"content": _MARK})]))
    before, after = template.split(_MARK_JSON)
    return [before + piece + after for piece in pieces]


def stream_tail(
    env: Envelope, style: StreamStyle, finish_reason: str, usage: Usage, timings: JsonDict | None = None
) -> bytes:
    """Finish frame, the usage-only frame (`choices: []`) if requested, then `[DONE]`.

    llama.cpp's `timings` ride on the last JSON chunk: the usage chunk when there is one.
    """
    finish = chunk_object(env, style, [delta_choice({}, finish_reason)])
    last = chunk_object(env, style, [], usage) if style.include_usage else finish
    if timings is not None:
        last["timings"] = timings
    tail = sse_frame(finish)
    if style.include_usage:
        tail += sse_frame(last)
    return tail + DONE_FRAME


def timings_object(usage: Usage) -> JsonDict:
    """llama.cpp server's `timings`: evaluated prompt tokens (cache hits in `cache_n`) and generation times."""
    prompt_n, predicted_n = usage.prompt - usage.cached, usage.completion
    p_ms, g_ms = prompt_ms(usage), generation_ms(usage)
    return {
        "cache_n": usage.cached,
        "prompt_n": prompt_n,
        "prompt_ms": p_ms,
        "prompt_per_token_ms": p_ms / prompt_n if prompt_n else 0.0,
        "prompt_per_second": prompt_n * 1000 / p_ms if p_ms else 0.0,
        "predicted_n": predicted_n,
        "predicted_ms": g_ms,
        "predicted_per_token_ms": g_ms / predicted_n if predicted_n else 0.0,
        "predicted_per_second": predicted_n * 1000 / g_ms if g_ms else 0.0,
    }


def text_completion_object(env: Envelope, choices: list[JsonDict], usage: Usage | None, style: StreamStyle) -> JsonDict:
    """A legacy `text_completion` (whole answer or stream chunk; `usage` placed as for chat chunks)."""
    obj: JsonDict = {"id": env.id, "object": "text_completion", "created": env.created, "model": env.model,
                     "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices}
    if usage is not None or style.include_usage:
        obj["usage"] = None if usage is None else usage_object(usage, style.dialect)
    return obj


def text_choice(text: str, finish_reason: str | None) -> JsonDict:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def completions_stream(
    env: Envelope, style: StreamStyle, pieces: tuple[str, ...], finish_reason: str, usage: Usage,
    *, timings: JsonDict | None = None,
) -> tuple[list[bytes], bytes]:
    """Legacy Completions stream: one chunk per text delta, a finish chunk, the usage chunk if asked, [DONE].

    As for chat, llama.cpp's `timings` ride on the last JSON chunk.
    """
    content = [sse_frame(text_completion_object(env, [text_choice(p, None)], None, style)) for p in pieces]
    finish = text_completion_object(env, [text_choice("", finish_reason)], None, style)
    last = text_completion_object(env, [], usage, style) if style.include_usage else finish
    if timings is not None:
        last["timings"] = timings
    tail = sse_frame(finish) + (sse_frame(last) if style.include_usage else b"")
    return content, tail + DONE_FRAME


def embedding_vector(index: int, dimensions: int) -> list[float]:
    """A deterministic unit-ish vector, different per input index."""
    return [round(((index + 1) * (d + 3) % 17) / 17 - 0.5, 6) for d in range(dimensions)]


def embeddings_object(model: str, inputs: int, dimensions: int, base64_encoded: bool, prompt: int) -> JsonDict:
    """`/v1/embeddings` answer: a `list` of `embedding` objects; usage is `{prompt_tokens, total_tokens}`."""
    data = []
    for index in range(inputs):
        vector = embedding_vector(index, dimensions)
        encoded: list[float] | str = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if base64_encoded else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


def stream_error_frame() -> bytes:
    """What OpenAI sends when a stream fails after it started: a `data:` event with an `error` object."""
    return sse_frame(error_object("The server had an error while processing your request. Sorry about that!",
                                  "server_error"))


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
