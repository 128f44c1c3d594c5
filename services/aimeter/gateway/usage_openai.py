"""OpenAI usage: Chat Completions (and OpenAI-compatible servers such as vLLM, SGLang, TGI, llama.cpp).

The rule that matters most: OpenAI's ``prompt_tokens`` already *includes* cached tokens, so
cached tokens are recorded as a subset and never added on top (the most reported cost bug in
peer projects).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.usage import NO_USAGE, Extracted, count, details


def openai_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """OpenAI Chat/Completions usage. ``prompt_tokens`` includes ``cached_tokens``."""
    prompt = details(usage, "prompt_tokens_details")
    completion = details(usage, "completion_tokens_details")
    return TokenUsage(
        input_tokens=count(usage, "prompt_tokens"),
        cache_read_input_tokens=count(prompt, "cached_tokens"),
        input_audio_tokens=count(prompt, "audio_tokens"),
        input_image_tokens=count(prompt, "image_tokens"),
        output_tokens=count(usage, "completion_tokens"),
        reasoning_output_tokens=count(completion, "reasoning_tokens"),
        output_audio_tokens=count(completion, "audio_tokens"),
    )


def llamacpp_compute_seconds(body: Mapping[str, Any]) -> float | None:
    """llama.cpp's ``timings`` (prompt_ms + predicted_ms) is GPU time the self-hosted cost model can use."""
    timings = body.get("timings")
    if not isinstance(timings, Mapping):
        return None
    total_ms = 0.0
    for key in ("prompt_ms", "predicted_ms"):
        value = timings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            total_ms += float(value)
    return total_ms / 1000.0 if total_ms else None


def from_openai_body(body: Any) -> Extracted:
    """Usage from an OpenAI-shaped chat completion (or final stream chunk); flags bad data instead of raising."""
    if not isinstance(body, Mapping):
        return Extracted(TokenUsage(), UsageSource.NONE, problem="response is not a JSON object")
    model = body.get("model")
    served = model if isinstance(model, str) else ""
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return Extracted(NO_USAGE.usage, NO_USAGE.source, served, problem=NO_USAGE.problem)
    try:
        tokens = openai_usage(usage)
    except (TypeError, ValidationError) as exc:
        return Extracted(TokenUsage(), UsageSource.NONE, served, problem=f"invalid usage: {exc}")
    return Extracted(tokens, UsageSource.REPORTED, served, llamacpp_compute_seconds(body))


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
        choices = event.get("choices") if isinstance(event, dict) else None
        parts = []
        for choice in choices if isinstance(choices, list) else []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts)

    def result(self) -> Extracted:
        if self.usage_body is None:
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, problem="stream carried no usage")
        return from_openai_body(self.usage_body)
