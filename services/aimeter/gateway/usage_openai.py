"""OpenAI usage: Chat Completions, legacy Completions, Embeddings and the Responses API.

Chat Completions and legacy Completions are also what vLLM, SGLang, TGI and llama.cpp speak.

The rule that matters most: OpenAI's ``prompt_tokens`` (and the Responses API's ``input_tokens``)
already *include* cached tokens, so cached tokens are recorded as a subset and never added on top
(the most reported cost bug in peer projects). The same holds for ``cache_write_tokens``, which the
API reference (and genai-prices' own OpenAI extractor) lists inside the input token details.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.usage import NO_USAGE, Extracted, checked, count, details


def openai_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """OpenAI Chat/Completions usage. ``prompt_tokens`` includes ``cached_tokens`` and ``cache_write_tokens``."""
    prompt = details(usage, "prompt_tokens_details")
    completion = details(usage, "completion_tokens_details")
    return TokenUsage(
        input_tokens=count(usage, "prompt_tokens"),
        cache_read_input_tokens=count(prompt, "cached_tokens"),
        cache_creation_input_tokens=count(prompt, "cache_write_tokens"),
        input_audio_tokens=count(prompt, "audio_tokens"),
        input_image_tokens=count(prompt, "image_tokens"),
        output_tokens=count(usage, "completion_tokens"),
        reasoning_output_tokens=count(completion, "reasoning_tokens"),
        output_audio_tokens=count(completion, "audio_tokens"),
    )


def responses_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """Responses API usage: ``input_tokens`` includes ``input_tokens_details.cached_tokens``.

    OpenAI's cache writes carry 30-minute / 12-hour TTLs (``cache_write_tokens_details``), which are
    not Anthropic's 5m / 1h classes, so they stay in ``cache_creation_input_tokens`` unsplit.
    """
    inputs = details(usage, "input_tokens_details")
    outputs = details(usage, "output_tokens_details")
    return TokenUsage(
        input_tokens=count(usage, "input_tokens"),
        cache_read_input_tokens=count(inputs, "cached_tokens"),
        cache_creation_input_tokens=count(inputs, "cache_write_tokens"),
        output_tokens=count(usage, "output_tokens"),
        reasoning_output_tokens=count(outputs, "reasoning_tokens"),
    )


def embeddings_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """Embeddings usage is ``{prompt_tokens, total_tokens}``: all input, nothing generated."""
    return TokenUsage(input_tokens=count(usage, "prompt_tokens"))


def llamacpp_compute_seconds(body: Mapping[str, Any]) -> float | None:
    """llama.cpp's ``timings`` (prompt_ms + predicted_ms) is GPU time the self-hosted cost model can use."""
    timings = body.get("timings")
    if not isinstance(timings, Mapping):
        return None
    total_ms = 0.0
    for key in ("prompt_ms", "predicted_ms"):
        value = timings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e12:
            total_ms += float(value)
    return total_ms / 1000.0 if total_ms else None


def _extract(body: Any, mapper: Callable[[Mapping[str, Any]], TokenUsage], problem: str = "") -> Extracted:
    """Run ``mapper`` on ``body["usage"]``; bad data becomes ``UsageSource.NONE`` with the reason, never an error."""
    if not isinstance(body, Mapping):
        return Extracted(TokenUsage(), UsageSource.NONE, problem="response is not a JSON object")
    model = body.get("model")
    served = model if isinstance(model, str) else ""
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return Extracted(NO_USAGE.usage, NO_USAGE.source, served, problem=problem or NO_USAGE.problem)
    return checked(mapper, usage, served, UsageSource.REPORTED, problem, compute_seconds=llamacpp_compute_seconds(body))


def from_openai_body(body: Any) -> Extracted:
    """Usage from an OpenAI-shaped chat completion (or final stream chunk); flags bad data instead of raising."""
    return _extract(body, openai_usage)


def from_completions_body(body: Any) -> Extracted:
    """Legacy ``/v1/completions``: the same ``usage`` object as Chat Completions (``CompletionUsage``)."""
    return _extract(body, openai_usage)


def from_embeddings_body(body: Any) -> Extracted:
    """``/v1/embeddings``: input tokens only; embeddings generate no output tokens."""
    return _extract(body, embeddings_usage)


def _response_problem(body: Mapping[str, Any]) -> str:
    """Why a Response did not complete (``incomplete_details`` / ``error``), so the row says so."""
    status = body.get("status")
    if status == "incomplete":
        incomplete = details(body, "incomplete_details") or {}
        return f"response incomplete: {incomplete.get('reason') or 'no reason given'}"
    if status == "failed":
        error = details(body, "error") or {}
        return f"response failed: {error.get('code') or ''}: {error.get('message') or 'no message'}"
    return ""


def from_responses_body(body: Any) -> Extracted:
    """A Responses API ``response`` object (the whole answer, or the one inside a terminal stream event)."""
    problem = _response_problem(body) if isinstance(body, Mapping) else ""
    return _extract(body, responses_usage, problem)


_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


class OpenAIChatStream:
    """Chat Completions stream: usage arrives in the last chunk when ``include_usage`` is on."""

    def __init__(self) -> None:
        self.usage_body: dict[str, Any] | None = None
        self.model = ""

    def interesting(self, payload: bytes) -> bool:
        return not self.model or _USAGE_OBJECT.search(payload) is not None

    def on_event(self, event: Any, event_type: str) -> None:
        if not isinstance(event, dict):
            return
        if not self.model and isinstance(event.get("model"), str):
            self.model = event["model"]
        if isinstance(event.get("usage"), dict):
            self.usage_body = event

    def text_of(self, event: Any) -> str:
        return _choice_texts(event, self._choice_text)

    @staticmethod
    def _choice_text(choice: Mapping[str, Any]) -> Any:
        delta = choice.get("delta")
        return delta.get("content") if isinstance(delta, Mapping) else None

    def result(self) -> Extracted:
        if self.usage_body is None:
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, problem="stream carried no usage")
        return from_openai_body(self.usage_body)


class OpenAICompletionsStream(OpenAIChatStream):
    """Legacy Completions stream: chat's framing and final usage chunk, text in ``choices[].text``."""

    @staticmethod
    def _choice_text(choice: Mapping[str, Any]) -> Any:
        return choice.get("text")


def _choice_texts(event: Any, pick: Callable[[Mapping[str, Any]], Any]) -> str:
    """Concatenated text of every choice in a chunk, read with ``pick``; '' for anything malformed."""
    choices = event.get("choices") if isinstance(event, dict) else None
    parts = []
    for choice in choices if isinstance(choices, list) else []:
        text = pick(choice) if isinstance(choice, Mapping) else None
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


_RESPONSE_EVENT = re.compile(
    rb'"type"\s*:\s*"(?:response\.(?:created|in_progress|completed|incomplete|failed)|error)"'
)
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStream:
    """Responses API stream (``event: response.*``): usage arrives in the terminal event's ``response``.

    Per OpenAI's streaming reference the stream ends with ``response.completed``, ``response.incomplete``
    or ``response.failed`` (each carrying the final Response and its usage), with no ``[DONE]``;
    ``complete`` says whether one arrived. An ``error`` event is recorded as the problem.
    """

    def __init__(self) -> None:
        self.model = ""
        self.final: Mapping[str, Any] | None = None
        self.complete = False
        self.error = ""

    def interesting(self, payload: bytes) -> bool:
        return _RESPONSE_EVENT.search(payload) is not None

    def on_event(self, event: Any, event_type: str) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        kind = kind if isinstance(kind, str) else event_type
        response = event.get("response")
        if isinstance(response, Mapping):
            if isinstance(response.get("model"), str):
                self.model = response["model"]
            if kind in _TERMINAL:
                self.final, self.complete = response, True
        if kind == "error":
            self.error = f"stream error event: {event.get('code') or ''}: {event.get('message') or 'no message'}"

    def text_of(self, event: Any) -> str:
        if isinstance(event, dict) and event.get("type") == "response.output_text.delta":
            delta = event.get("delta")
            return delta if isinstance(delta, str) else ""
        return ""

    def result(self) -> Extracted:
        if self.final is None:
            problem = self.error or "stream ended before response.completed"
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, problem=problem)
        got = from_responses_body(self.final)
        if self.error and got.source is UsageSource.REPORTED:
            return Extracted(got.usage, got.source, got.model_served, got.compute_seconds,
                             "; ".join(p for p in (got.problem, self.error) if p))
        return got
