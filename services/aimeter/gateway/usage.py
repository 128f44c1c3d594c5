"""Per-API usage extraction: pure functions from a decoded response body to normalized tokens.

Each API's mapping is written once here. The rule that matters most: OpenAI's
``prompt_tokens`` already *includes* cached tokens, so cached tokens are recorded as a
subset and never added on top (the most reported cost bug in peer projects).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aimeter.events import TokenUsage, UsageSource


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a response told us: tokens, how trustworthy they are, and the served model."""

    usage: TokenUsage
    source: UsageSource
    model_served: str = ""
    compute_seconds: float | None = None
    problem: str = ""


NO_USAGE = Extracted(TokenUsage(), UsageSource.NONE, problem="response carried no usage block")


def _count(obj: Mapping[str, Any] | None, key: str) -> int:
    """A token count, or 0 when absent/null. Raises on wrong types so bad data is flagged, not summed."""
    if not obj:
        return 0
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is not an integer: {value!r}")
    return value


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else None


def openai_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """OpenAI Chat/Completions usage. ``prompt_tokens`` includes ``cached_tokens``."""
    prompt = _details(usage, "prompt_tokens_details")
    completion = _details(usage, "completion_tokens_details")
    return TokenUsage(
        input_tokens=_count(usage, "prompt_tokens"),
        cache_read_input_tokens=_count(prompt, "cached_tokens"),
        input_audio_tokens=_count(prompt, "audio_tokens"),
        input_image_tokens=_count(prompt, "image_tokens"),
        output_tokens=_count(usage, "completion_tokens"),
        reasoning_output_tokens=_count(completion, "reasoning_tokens"),
        output_audio_tokens=_count(completion, "audio_tokens"),
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
