"""What the fake upstream will answer, decided from the request body alone (every API, one grammar).

Tests and benchmarks steer the fake through the body only, so the steering passes through the
gateway unchanged. The last turn's text (chat message, Anthropic message, Gemini content, Responses
input item) or the prompt string (legacy Completions, Embeddings input, Ollama generate) may carry

    fake: prompt=1000 completion=500 cached=200 reasoning=50 chunks=100 latency_ms=50

made of whitespace-separated `key=value` pairs after `fake:`, in any order, any subset:

    prompt          ALL input tokens, in normalized semantics: cache reads and writes included
    completion      ALL output tokens, reasoning included (embeddings: must stay 0)
    cached          cache reads, a subset of prompt
    cache_write_5m  cache writes with a 5-minute TTL, a subset of prompt (Anthropic)
    cache_write_1h  cache writes with a 1-hour TTL, a subset of prompt (Anthropic)
    reasoning       reasoning / thinking / thought tokens, a subset of completion
    thoughts        alias of reasoning (Gemini's name)
    chunks          number of content deltas in a stream (default 20)
    words           length of the answer text (default 80; streams: at least `chunks`)
    latency_ms      wait before answering (streams: before the first byte);
                    replaces the server-wide default for this request
    gap_ms          wait between streamed content deltas
    drop            stream only this many content deltas, then cut the connection
    error_after     stream this many content deltas, then the API's in-stream error event, then end
    error_only      1: a 200 stream that carries the API's in-stream error and nothing else (Anthropic's
                    `event: error` overloaded_error, Gemini's error chunk, the Responses API's `error`
                    event, OpenAI Chat's `data: {"error": …}`, Ollama's error line)
    linger_ms       after a stream's last event, wait this long before ending the response (an upstream or
                    load balancer slow to close; the client has its whole answer already)
    status          answer with this HTTP error (400-599) in the API's error shape
    served          model name to report instead of the requested one
    dialect         OpenAI Chat / Completions usage as an OpenAI-compatible provider writes it:
                    deepseek (prompt_cache_hit/miss_tokens) or xai (reasoning outside completion_tokens)
    timings         1: add llama.cpp's `timings` object (OpenAI-compatible Chat and Completions)
    frozen          1: fixed ids and timestamps, so two answers can be compared byte for byte
    malformed       1-5: a broken whole answer: cut JSON, bad UTF-8, negative / absent / absurd counts

Each API reports the numbers in its OWN semantics. `prompt=1000 cached=200 cache_write_5m=100`
becomes OpenAI `prompt_tokens=1000, cached_tokens=200`, Anthropic `input_tokens=700,
cache_read_input_tokens=200, cache_creation_input_tokens=100`, Gemini `promptTokenCount=1000,
cachedContentTokenCount=200`, Ollama `prompt_eval_count=1000, prompt_eval_cached_count=200`.
Likewise `completion=500 reasoning=50` is Gemini `candidatesTokenCount=450, thoughtsTokenCount=50`.
APIs with no field for a class (cache writes on Gemini / Ollama) leave it out.

An unknown key or a non-integer value is a 400, so a mistyped test fails loudly; `fake:` followed
by no pair at all is ordinary text. Without a directive: prompt by the default rule of
`aimeter.fake_upstream.bodies`, completion = the request's token limit or 16 (0 for embeddings),
everything else 0. The finish reason is "length" when a limit was sent and completion reaches it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from aimeter.fake_upstream.bodies import (
    Request,
    RequestError,
    count_prompt_tokens,
    load_json,
    message_text,
    read_chat,
)
from aimeter.fake_upstream.common import Usage
from aimeter.fake_upstream.openai_shapes import DIALECTS, StreamStyle

__all__ = ["Plan", "RequestError", "build_plan", "count_prompt_tokens", "message_text", "parse_directive", "plan_for"]

DEFAULT_COMPLETION_TOKENS = 16
DEFAULT_CHUNKS = 20
# Sized so a directive-free, non-streaming chat answer is ~1 KB of JSON, as the benchmarks want.
DEFAULT_WORDS = 80
MAX_COUNT = 100_000_000
MAX_PIECES = 100_000
MAX_WAIT_MS = 600_000

_USAGE_KEYS = ("prompt", "completion", "cached", "reasoning", "cache_write_5m", "cache_write_1h")
_INT_KEYS = frozenset(
    {*_USAGE_KEYS, "chunks", "words", "latency_ms", "gap_ms", "drop", "error_after", "status", "timings", "frozen",
     "linger_ms", "malformed", "error_only"}
)
_ALIASES = {"thoughts": "reasoning"}
_TEXT_KEYS = {"served": None, "dialect": frozenset(DIALECTS)}  # keys with text values; None: any text
_KNOWN = ", ".join(sorted(_INT_KEYS | set(_ALIASES) | set(_TEXT_KEYS)))
_DIRECTIVE = re.compile(r"fake:((?:[ \t]+[a-z_0-9]+=\S+)+)")


class Plan(NamedTuple):
    """Everything the answer to one request will be, decided before any waiting or writing."""

    model: str
    usage: Usage
    finish_reason: str  # "stop" or "length"; each API spells it its own way
    words: int
    chunks: int
    stream: bool
    style: StreamStyle
    latency_s: float
    gap_s: float
    drop: int | None
    status: int | None
    error_after: int | None = None
    timings: bool = False
    frozen: bool = False  # fixed ids and timestamps, so two answers can be compared byte for byte
    malformed: int = 0  # a broken whole answer on purpose (see fake_upstream/malformed.py)
    linger_s: float = 0.0  # wait after a stream's last event before ending the response
    error_only: bool = False  # the stream is the API's in-stream error alone


def parse_directive(text: str) -> dict[str, int | str]:
    """Read `fake: key=value …` from `text`; a bare `fake:` without pairs is plain text."""
    if "fake:" not in text:
        return {}
    match = _DIRECTIVE.search(text)
    if match is None:
        return {}
    found: dict[str, int | str] = {}
    for pair in match.group(1).split():
        key, _, value = pair.partition("=")
        key = _ALIASES.get(key, key)
        if key in _TEXT_KEYS:
            allowed = _TEXT_KEYS[key]
            if allowed is not None and value not in allowed:
                raise RequestError(f"Fake directive {key!r} must be one of {', '.join(sorted(allowed))}, "
                                   f"got {value!r}.")
            found[key] = value
        elif key not in _INT_KEYS:
            raise RequestError(f"Unknown fake directive key {key!r} in {pair!r}; known keys: {_KNOWN}.", "messages")
        elif not (value.isascii() and value.isdigit()):
            raise RequestError(f"Fake directive {key!r} needs a non-negative integer, got {value!r}.")
        else:
            found[key] = int(value)
    return found


_LIMITS = {
    **dict.fromkeys(_USAGE_KEYS, MAX_COUNT),
    "chunks": MAX_PIECES,
    "words": MAX_PIECES,
    "latency_ms": MAX_WAIT_MS,
    "gap_ms": MAX_WAIT_MS,
    "linger_ms": MAX_WAIT_MS,
    "timings": 1,
    "frozen": 1,
    "error_only": 1,
    "malformed": 5,
}


def _check_usage(usage: Usage, request: Request) -> None:
    """Subsets must fit their totals, as the APIs guarantee; say which numbers do not."""
    if usage.cached + usage.cache_write > usage.prompt:
        raise RequestError(f"fake directive: cached={usage.cached} + cache writes={usage.cache_write} "
                           f"exceed prompt={usage.prompt}.")
    if usage.reasoning > usage.completion:
        raise RequestError(f"fake directive: reasoning={usage.reasoning} exceeds completion={usage.completion}.")
    if not request.generates and usage.completion:
        raise RequestError("fake directive: embeddings generate no tokens; completion must be 0.")


def _check(directive: dict[str, Any], usage: Usage, request: Request) -> None:
    """Refuse impossible numbers, naming them, so a wrong test setup fails loudly."""
    _check_usage(usage, request)
    for key, limit in _LIMITS.items():
        if directive.get(key, 0) > limit:
            raise RequestError(f"fake directive: {key}={directive[key]} exceeds the limit {limit}.")
    if directive.get("chunks") == 0:
        raise RequestError("fake directive: chunks must be at least 1.")
    if sum(key in directive for key in ("drop", "error_after", "error_only")) > 1:
        raise RequestError("fake directive: use either drop or error_after or error_only, not two of them.")
    status = directive.get("status")
    if status is not None and not 400 <= status <= 599:
        raise RequestError(f"fake directive: status={status} is not an HTTP error status (400-599).")


def _usage(directive: dict[str, Any], request: Request) -> Usage:
    """Directive numbers where given, else the default rule (see the module docstring)."""
    default_completion = (request.limit or DEFAULT_COMPLETION_TOKENS) if request.generates else 0
    return Usage(
        prompt=directive.get("prompt", request.default_prompt),
        completion=directive.get("completion", default_completion),
        cached=directive.get("cached", 0),
        reasoning=directive.get("reasoning", 0),
        cache_write_5m=directive.get("cache_write_5m", 0),
        cache_write_1h=directive.get("cache_write_1h", 0),
    )


def plan_for(request: Request, default_latency_ms: float) -> Plan:
    """Decide the whole answer to a request any API reader produced; pure, so testable without HTTP."""
    directive: dict[str, Any] = parse_directive(request.directive_text)
    usage = _usage(directive, request)
    if directive:
        _check(directive, usage, request)
    chunks = directive.get("chunks", DEFAULT_CHUNKS)
    words = directive.get("words", DEFAULT_WORDS)
    limit = request.limit
    return Plan(
        model=directive.get("served", request.model),
        usage=usage,
        finish_reason="length" if limit is not None and usage.completion >= limit else "stop",
        words=max(words, chunks) if request.stream else words,
        chunks=chunks,
        stream=request.stream,
        style=request.style._replace(dialect=directive["dialect"]) if "dialect" in directive else request.style,
        latency_s=directive.get("latency_ms", default_latency_ms) / 1000,
        gap_s=directive.get("gap_ms", 0) / 1000,
        drop=directive.get("drop"),
        status=directive.get("status"),
        error_after=directive.get("error_after"),
        timings=directive.get("timings") == 1,
        frozen=directive.get("frozen") == 1,
        malformed=int(directive.get("malformed", 0)),
        linger_s=directive.get("linger_ms", 0) / 1000,
        error_only=directive.get("error_only") == 1,
    )


def build_plan(raw: bytes, default_latency_ms: float) -> Plan:
    """The plan for a raw Chat Completions body (the other APIs go through `plan_for` with their reader)."""
    return plan_for(read_chat(load_json(raw)), default_latency_ms)
