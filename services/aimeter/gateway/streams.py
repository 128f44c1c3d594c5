"""What every API's stream-usage reader implements, and the shared estimate for cancelled streams.

The gateway's stream framing (SSE or NDJSON) hands each *decoded* event to a ``StreamUsage``
only when its cheap byte test says the event may matter, so the common content chunk costs
no JSON parse on the hot path. Raw content events are kept (bounded by the response size) and
decoded only if the stream ends without usage, to estimate the tokens already generated.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import orjson

from aimeter.events import UsageSource
from aimeter.gateway.usage import Extracted


class StreamUsage(Protocol):
    """Reads one API's stream events in order and reports the usage they carried."""

    def interesting(self, payload: bytes) -> bool:
        """Cheap byte test: may this event carry usage or the served model? False skips the decode."""
        ...

    def on_event(self, event: Any, event_type: str) -> None:
        """A decoded JSON event (SSE ``data`` or one NDJSON line); ``event_type`` is the SSE ``event:`` name or ''."""
        ...

    def text_of(self, event: Any) -> str:
        """Generated text in one decoded event (for estimating a stream that carried no usage)."""
        ...

    def result(self) -> Extracted:
        """Usage seen so far; ``UsageSource.NONE`` when the stream carried none."""
        ...


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` when no offline tokenizer exists for the model.

    BPE tokenizers of current models average ~4 bytes of English per token; we round up so an
    estimate errs towards what the provider bills. Rows using it say ``usage_source=estimated``.
    """
    return math.ceil(len(text.encode("utf-8")) / 4) if text else 0


# Request fields whose string values are prompt text in some API (OpenAI chat/completions/responses,
# Anthropic, Gemini, Ollama). Image and audio payloads sit under other keys (``url``, ``data``,
# ``inline_data``), so base64 never counts as text.
_PROMPT_KEYS = frozenset({"messages", "content", "text", "system", "instructions", "prompt", "input", "contents",
                          "parts", "systemInstruction", "system_instruction", "arguments", "output"})
_TOOL_KEYS = ("tools", "functions")  # schemas the provider renders into the prompt


def prompt_text(request: dict[str, Any]) -> str:
    """The text a request sends as its prompt, for estimating input tokens when a stream reports none."""
    found: list[str] = []

    def walk(value: Any, counted: bool) -> None:
        if isinstance(value, str):
            if counted:
                found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item, counted)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, key in _PROMPT_KEYS)

    walk(request, False)
    for key in _TOOL_KEYS:
        if request.get(key):
            found.append(orjson.dumps(request[key]).decode())
    return "\n".join(found)


def with_prompt_estimate(extracted: Extracted, request: dict[str, Any]) -> Extracted:
    """A stream that reported no input tokens (an OpenAI stream cancelled before its usage chunk) still
    billed its prompt: estimate the prompt's tokens rather than record 0. Reported counts are never touched."""
    if extracted.source is UsageSource.REPORTED or extracted.usage.input_tokens:
        return extracted
    tokens = estimate_tokens(prompt_text(request))
    if not tokens:
        return extracted
    usage = extracted.usage.model_copy(update={"input_tokens": tokens})
    problem = "; ".join(p for p in (extracted.problem, "input tokens estimated from the prompt") if p)
    return Extracted(usage, UsageSource.ESTIMATED, extracted.model_served, extracted.compute_seconds, problem)
