"""The Ollama native API unit (``/api/chat``, ``/api/generate``): upstream ``<base_url>`` + path, a bearer
credential if one is configured, ``{"error": "<message>"}`` errors, and usage: counts and GPU time in the final
object.

Per Ollama's usage docs the final object (``done: true``) carries ``prompt_eval_count`` (input tokens),
``eval_count`` (output tokens) and durations in nanoseconds. Newer versions add
``prompt_eval_cached_count`` ("prompt tokens read from the cache"); Ollama computes
``prompt_eval_count`` as cached + newly evaluated tokens, so the cached count is a subset of input.
(Ollama versions before mid-2024 left ``prompt_eval_count`` out when the whole prompt was cached; it
then counts 0, which is what those versions billed nothing for.)

Compute time is ``prompt_eval_duration + eval_duration``, not ``total_duration``: the total also
includes ``load_duration`` (reading the model into GPU memory after idle) and queueing, which are
the backend's fixed cost, not this request's marginal GPU work.

Ollama streams by DEFAULT: a request without ``"stream"`` (or with ``null``) gets an NDJSON stream,
one JSON object per line, ``done: false`` … then ``done: true`` with the counts. Only
``"stream": false`` gives one JSON object. ``ollama_streams`` tells the gateway which it will get.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.providers.base import ApiSpec, Provider
from aimeter.gateway.usage import NO_USAGE, Extracted, checked, count, joined

_COUNT_KEYS = ("prompt_eval_count", "eval_count")
ERROR_TYPE = "error"  # Ollama's errors are a bare message ({"error": "<text>"}) with no type of their own
_MAX_DURATION_NS = 10**18  # ~31 years: anything larger is garbage, not GPU time


def ollama_streams(request: Any, _method: str = "") -> bool:
    """Whether Ollama will stream the answer: yes unless the body says ``"stream": false``."""
    return not (isinstance(request, Mapping) and request.get("stream") is False)


def ollama_usage(body: Mapping[str, Any]) -> TokenUsage:
    """Normalize the final object's counts: input = prompt_eval_count (cached included), output = eval_count."""
    return TokenUsage(
        input_tokens=count(body, "prompt_eval_count"),
        cache_read_input_tokens=count(body, "prompt_eval_cached_count"),
        output_tokens=count(body, "eval_count"),
    )


def compute_seconds(body: Mapping[str, Any]) -> float | None:
    """GPU seconds of this request: prompt evaluation + generation (load time excluded, see module doc)."""
    total = 0
    for key in ("prompt_eval_duration", "eval_duration"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_DURATION_NS:
            return None
        total += value
    return total / 1e9 if total else None


def from_ollama_body(body: Any) -> Extracted:
    """Usage of a non-streamed answer or of a stream's ``done: true`` line; never raises."""
    if not isinstance(body, Mapping):
        return Extracted(TokenUsage(), UsageSource.NONE, problem="response is not a JSON object")
    served = model if isinstance(model := body.get("model"), str) else ""
    if "error" in body:
        return Extracted(TokenUsage(), UsageSource.NONE, served, problem=f"error body: {body['error']!s:.500}",
                         error_type=ERROR_TYPE)
    if all(body.get(key) is None for key in _COUNT_KEYS):
        return Extracted(NO_USAGE.usage, NO_USAGE.source, served, problem=NO_USAGE.problem)
    return checked(ollama_usage, body, served, UsageSource.REPORTED, compute_seconds=compute_seconds(body))


_FINAL_OR_ERROR = re.compile(rb'"done"\s*:\s*true|"error"\s*:')


class OllamaStream:
    """NDJSON stream (``StreamScanner(..., ndjson=True)``): counts arrive on the ``done: true`` line.

    ``complete`` means that line arrived. A mid-stream ``{"error": …}`` line is kept as the problem and
    makes the attempt an upstream error (type ``error``: Ollama's errors carry no type).
    """

    def __init__(self) -> None:
        self.model = ""
        self.final: Mapping[str, Any] | None = None
        self.complete = False
        self.error = ""

    def interesting(self, payload: bytes) -> bool:
        return not self.model or _FINAL_OR_ERROR.search(payload) is not None

    def on_event(self, event: Any, event_type: str) -> None:
        if not isinstance(event, dict):
            return
        if isinstance(event.get("model"), str):
            self.model = event["model"]
        if "error" in event:
            self.error = f"stream error line: {event['error']!s:.500}"
        if event.get("done") is True:
            self.final, self.complete = event, True

    def text_of(self, event: Any) -> str:
        """Generated text of one line: ``message.content`` (/api/chat) or ``response`` (/api/generate)."""
        if not isinstance(event, dict):
            return ""
        message = event.get("message")
        text = message.get("content") if isinstance(message, Mapping) else event.get("response")
        return text if isinstance(text, str) else ""

    def result(self) -> Extracted:
        error = ERROR_TYPE if self.error else ""
        if self.final is None:
            problem = self.error or "stream ended before the done:true line"
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, problem=problem, error_type=error)
        got = from_ollama_body(self.final)
        if self.error:
            return replace(got, problem=joined(got.problem, self.error), error_type=error)
        return got


def ollama_error(_status: int, message: str, _param: str | None = None) -> bytes:
    """Ollama's error body: {"error": "<message>"} (the HTTP status carries the class)."""
    return orjson.dumps({"error": message})


OLLAMA = frozenset({"ollama"})
OLLAMA_CHAT = ApiSpec("ollama.chat", OLLAMA, from_ollama_body, OllamaStream, ollama_error, "/api/chat",
                      is_stream=ollama_streams, ndjson=True)
OLLAMA_GENERATE = ApiSpec("ollama.generate", OLLAMA, from_ollama_body, OllamaStream, ollama_error, "/api/generate",
                          is_stream=ollama_streams, ndjson=True)
PROVIDER = Provider(
    "ollama", ("ollama",),
    routes={"/api/chat": OLLAMA_CHAT, "/api/generate": OLLAMA_GENERATE},
    credential=("authorization", "Bearer "),
)
