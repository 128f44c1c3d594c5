"""What the fake upstream will answer, decided from the request body alone.

Tests and benchmarks steer the fake through the body only, so the steering passes through
the gateway unchanged. The last message's text may carry a directive

    fake: prompt=1000 completion=500 cached=200 reasoning=50 chunks=100 latency_ms=50

made of whitespace-separated `key=value` pairs after `fake:`, in any order, any subset:

    prompt, completion      usage counts to report (`prompt_tokens`, `completion_tokens`)
    cached, reasoning       subsets of prompt / completion (400 if larger)
    chunks                  number of content deltas in a stream (default 20)
    words                   length of the answer text (default 80; streams: at least `chunks`)
    latency_ms              wait before answering (streams: before the first byte);
                            replaces the server-wide default for this request
    gap_ms                  wait between streamed content deltas
    drop                    stream only this many content deltas, then cut the connection
    status                  answer with this HTTP error (400-599) in the API's error shape
    served                  model name to report instead of the requested one

An unknown key or a non-integer value is a 400, so a mistyped test fails loudly; `fake:`
followed by no pair at all is ordinary text.

Without a directive: prompt_tokens = sum over messages of (4 + whitespace-split words of its
text), completion_tokens = max_completion_tokens or max_tokens or 16, cached = reasoning = 0.
finish_reason is "length" when a token limit was sent and completion_tokens reaches it.

Pure: no I/O, no clock. The grammar is meant to be shared by every fake API module.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

from aimeter.fake_upstream.openai_shapes import StreamStyle, Usage

DEFAULT_COMPLETION_TOKENS = 16
DEFAULT_CHUNKS = 20
# Sized so a directive-free, non-streaming answer is ~1 KB of JSON, as the benchmarks want.
DEFAULT_WORDS = 80
MAX_COUNT = 100_000_000
MAX_PIECES = 100_000
MAX_WAIT_MS = 600_000

_INT_KEYS = frozenset(
    {"prompt", "completion", "cached", "reasoning", "chunks", "words", "latency_ms", "gap_ms", "drop", "status"}
)
_DIRECTIVE = re.compile(r"fake:((?:[ \t]+[a-z_]+=\S+)+)")


class RequestError(Exception):
    """A request the fake refuses with 400, as OpenAI would (`invalid_request_error`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class Plan(NamedTuple):
    """Everything the answer to one request will be, decided before any waiting or writing."""

    model: str
    usage: Usage
    finish_reason: str
    words: int
    chunks: int
    stream: bool
    style: StreamStyle
    latency_s: float
    gap_s: float
    drop: int | None
    status: int | None


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
        if key == "served":
            found[key] = value
        elif key not in _INT_KEYS:
            known = ", ".join(sorted(_INT_KEYS | {"served"}))
            raise RequestError(f"Unknown fake directive key {key!r} in {pair!r}; known keys: {known}.", "messages")
        elif not (value.isascii() and value.isdigit()):
            raise RequestError(f"Fake directive {key!r} needs a non-negative integer, got {value!r}.")
        else:
            found[key] = int(value)
    return found


def message_text(message: dict[str, Any]) -> str:
    """The text of a message: string content, or its text parts joined (other parts ignored)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Deterministic stand-in for a tokenizer: 4 per message plus its whitespace-split words."""
    return sum(4 + len(message_text(m).split()) for m in messages)


def _load_body(raw: bytes) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Parse and check the request body: a JSON object with `model` and non-empty `messages`."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError(
            "We could not parse the JSON body of your request. The API expects a JSON payload."
        ) from None
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError(
            "Missing required parameter: 'messages' (a non-empty array of objects).",
            "messages",
            "missing_required_parameter",
        )
    return model, messages, body


def _token_limit(body: dict[str, Any]) -> int | None:
    """`max_completion_tokens`, else the older `max_tokens`; None when neither is set."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"Invalid '{name}': expected a positive integer, got {value!r}.", name)
        return value
    return None


_LIMITS = {
    "prompt": MAX_COUNT,
    "completion": MAX_COUNT,
    "chunks": MAX_PIECES,
    "words": MAX_PIECES,
    "latency_ms": MAX_WAIT_MS,
    "gap_ms": MAX_WAIT_MS,
}
_DEFAULT_STYLE = StreamStyle()


def _check(directive: dict[str, Any], usage: Usage) -> None:
    """Refuse impossible numbers, naming them, so a wrong test setup fails loudly."""
    if usage.cached > usage.prompt:
        raise RequestError(f"fake directive: cached={usage.cached} exceeds prompt={usage.prompt}.")
    if usage.reasoning > usage.completion:
        raise RequestError(f"fake directive: reasoning={usage.reasoning} exceeds completion={usage.completion}.")
    for key, limit in _LIMITS.items():
        if directive.get(key, 0) > limit:
            raise RequestError(f"fake directive: {key}={directive[key]} exceeds the limit {limit}.")
    if directive.get("chunks") == 0:
        raise RequestError("fake directive: chunks must be at least 1.")
    status = directive.get("status")
    if status is not None and not 400 <= status <= 599:
        raise RequestError(f"fake directive: status={status} is not an HTTP error status (400-599).")


def _usage(directive: dict[str, Any], messages: list[dict[str, Any]], limit: int | None) -> Usage:
    """Directive numbers where given, else the default rule (see the module docstring)."""
    prompt = directive["prompt"] if "prompt" in directive else count_prompt_tokens(messages)
    completion = directive.get("completion", limit or DEFAULT_COMPLETION_TOKENS)
    return Usage(prompt, completion, directive.get("cached", 0), directive.get("reasoning", 0))


def _style(body: dict[str, Any]) -> StreamStyle:
    """`stream_options` as sent; OpenAI includes obfuscation unless it is turned off."""
    options = body.get("stream_options")
    if options is None:
        return _DEFAULT_STYLE
    if not isinstance(options, dict):
        raise RequestError("Invalid 'stream_options': expected an object.", "stream_options")
    return StreamStyle(options.get("include_usage") is True, options.get("include_obfuscation") is not False)


def build_plan(raw: bytes, default_latency_ms: float) -> Plan:
    """Decide the whole answer from the raw body; pure, so it is unit-testable without HTTP."""
    model, messages, body = _load_body(raw)
    directive: dict[str, Any] = parse_directive(message_text(messages[-1]))
    limit = _token_limit(body)
    usage = _usage(directive, messages, limit)
    if directive:
        _check(directive, usage)
    chunks = directive.get("chunks", DEFAULT_CHUNKS)
    stream = body.get("stream") is True
    words = directive.get("words", DEFAULT_WORDS)
    return Plan(
        model=directive.get("served", model),
        usage=usage,
        finish_reason="length" if limit is not None and usage.completion >= limit else "stop",
        words=max(words, chunks) if stream else words,
        chunks=chunks,
        stream=stream,
        style=_style(body),
        latency_s=directive.get("latency_ms", default_latency_ms) / 1000,
        gap_s=directive.get("gap_ms", 0) / 1000,
        drop=directive.get("drop"),
        status=directive.get("status"),
    )
