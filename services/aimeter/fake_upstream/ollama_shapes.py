"""Pure builders of Ollama native API objects (``/api/chat``, ``/api/generate``) for the fake upstream.

Shapes follow Ollama's API docs: streaming is the default and is NDJSON, one object per line with
``done: false``, then a final ``done: true`` object carrying ``done_reason``, ``prompt_eval_count``
(every prompt token, cached ones included), ``prompt_eval_cached_count`` (when there were cache
hits), ``eval_count`` and the durations in nanoseconds (``total_duration``, ``load_duration``,
``prompt_eval_duration``, ``eval_duration``). Durations come from the synthetic speeds in
``aimeter.fake_upstream.common`` so tests can predict them. Errors are ``{"error": "<message>"}``.
"""

from __future__ import annotations

from typing import NamedTuple

from aimeter.fake_upstream.common import (
    LOAD_MS,
    JsonDict,
    StreamParts,
    Usage,
    content_text,
    generation_ms,
    ndjson,
    prompt_ms,
    text_pieces,
)
from aimeter.fake_upstream.plan import Plan

_NS_PER_MS = 1_000_000
_OVERHEAD_NS = 1_000_000
_CONTEXT = [128006, 882, 128007]  # /api/generate's (deprecated) `context`: token ids, content irrelevant


class Where(NamedTuple):
    """Which endpoint answers (chat puts text in `message.content`, generate in `response`) and when."""

    chat: bool
    created_at: str


def metrics(usage: Usage) -> JsonDict:
    """The final object's counters; `prompt_eval_duration` covers only the uncached prompt tokens."""
    prompt_ns = int(prompt_ms(usage) * _NS_PER_MS)
    eval_ns = int(generation_ms(usage) * _NS_PER_MS)
    load_ns = int(LOAD_MS * _NS_PER_MS)
    obj: JsonDict = {
        "total_duration": load_ns + prompt_ns + eval_ns + _OVERHEAD_NS,
        "load_duration": load_ns,
        "prompt_eval_count": usage.prompt,
        "prompt_eval_duration": prompt_ns,
        "eval_count": usage.completion,
        "eval_duration": eval_ns,
    }
    if usage.cached:
        obj["prompt_eval_cached_count"] = usage.cached
    return obj


def _line(where: Where, model: str, text: str) -> JsonDict:
    body: JsonDict = {"model": model, "created_at": where.created_at}
    if where.chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    return body


def final(where: Where, plan: Plan, text: str) -> JsonDict:
    """The `done: true` object (the whole answer when not streaming, the last line when streaming)."""
    obj = {**_line(where, plan.model, text), "done": True, "done_reason": plan.finish_reason}
    if not where.chat:
        obj["context"] = _CONTEXT
    return {**obj, **metrics(plan.usage)}


def whole(where: Where, plan: Plan) -> JsonDict:
    return final(where, plan, content_text(plan.words))


def stream(where: Where, plan: Plan) -> StreamParts:
    """NDJSON lines; `error` is the `{"error": …}` line Ollama writes when generation fails mid-stream."""
    content = [ndjson({**_line(where, plan.model, piece), "done": False})
               for piece in text_pieces(plan.words, plan.chunks)]
    failure = ndjson({"error": "an error was encountered while running the model: unexpected EOF"})
    return StreamParts(b"", content, ndjson(final(where, plan, "")), failure)


def simulated_error(status: int, model: str) -> JsonDict:
    """Ollama's error body; 404 is its "model not found" answer."""
    if status == 404:
        return {"error": f'model "{model}" not found, try pulling it first'}
    return {"error": f"simulated HTTP {status} error (fake upstream)"}
