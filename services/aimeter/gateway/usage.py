"""Shared pieces of usage extraction: the result type and strict count readers.

Each API's mapping lives in its provider unit (``aimeter.gateway.providers.<api>``) as pure functions from a decoded
response body (or stream events) to normalized token classes (see ``aimeter.events.usage``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aimeter.events import TokenUsage, UsageFlag, UsageSource


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a response told us: tokens, how trustworthy they are, and the served model.

    ``problem`` says why usage is missing, partial or estimated; ``error_type`` is the provider's own
    error type when the answer (a body, or an event inside a 200 stream) was an error; ``flags`` are
    ``UsageFlag`` codes for implausible counts, which are kept as reported. All three reach the event.
    """

    usage: TokenUsage
    source: UsageSource
    model_served: str = ""
    compute_seconds: float | None = None
    problem: str = ""
    error_type: str = ""
    flags: tuple[str, ...] = ()


NO_USAGE = Extracted(TokenUsage(), UsageSource.NONE, problem="response carried no usage block")


def count(obj: Mapping[str, Any] | None, key: str) -> int:
    """A token count, or 0 when absent/null. Raises on wrong types and negatives so bad data is flagged,
    never summed: several APIs report parts that we add up, where a negative part could hide."""
    if not obj:
        return 0
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is not an integer: {value!r}")
    if value < 0:
        raise ValueError(f"{key} is negative: {value}")
    return value


def checked(mapper: Callable[[Mapping[str, Any]], TokenUsage], usage: Mapping[str, Any], served: str,
            source: UsageSource, problem: str = "", *, compute_seconds: float | None = None, error_type: str = "",
            flags: tuple[str, ...] = ()) -> Extracted:
    """Map ``usage``; any bad value becomes ``UsageSource.NONE`` with the reason instead of an exception."""
    try:
        tokens = mapper(usage)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        return Extracted(TokenUsage(), UsageSource.NONE, served, problem=joined(problem, f"invalid usage: {exc}"),
                         error_type=error_type, flags=flags)
    return Extracted(tokens, source, served, compute_seconds, problem, error_type, flags)


def joined(*problems: str) -> str:
    """Several reasons as one text, each once, in order."""
    return "; ".join(dict.fromkeys(p for p in problems if p))


def error_label(value: Any) -> str:
    """A provider's error type or code as a short label ('' when absent); numbers (HTTP-like codes) as text."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value)[:128]


class RunningCounts:
    """Watches the running totals a stream repeats (Gemini's usageMetadata, Anthropic's message_delta, usage
    on every OpenAI-compatible chunk): a total that goes down is implausible, flagged but never dropped."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.decreased = False

    def see(self, usage: Mapping[str, Any], keys: Iterable[str]) -> None:
        for key in keys:
            value = usage.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                continue
            if value < self.last.get(key, 0):
                self.decreased = True
            self.last[key] = value

    @property
    def flags(self) -> tuple[str, ...]:
        return (UsageFlag.USAGE_DECREASED.value,) if self.decreased else ()


def details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else None




# Request fields that cap generated tokens per choice: OpenAI Chat (max_completion_tokens, legacy max_tokens),
# Completions and Anthropic (max_tokens), the Responses API (max_output_tokens), Ollama's options.num_predict
# (-1 and -2 mean "no limit") and Gemini's generationConfig.maxOutputTokens. Completions are billed per choice
# (n; legacy best_of ones are generated and billed too; Gemini's candidateCount).
# "Far above": an upstream stops at its limit; a little over it is tokenizer noise (stop tokens, n choices
# summed), 1.5x plus 16 tokens is not.
SLACK_RATIO, SLACK_TOKENS = 1.5, 16


def _positive(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0  # type(): a bool is not a token count


def _request_limit(request: Mapping[str, Any]) -> tuple[int, int, bool]:
    """(token limit per choice or 0, number of choices, whether reasoning tokens sit outside the limit).

    Runs on every request: plain lookups, no generators (docs/decisions.md says what they cost)."""
    get = request.get
    limit = (_positive(get("max_completion_tokens")) or _positive(get("max_tokens"))
             or _positive(get("max_output_tokens")))
    if not limit:
        config = get("generationConfig") or get("generation_config")
        if isinstance(config, Mapping):
            # Gemini: whether thinking counts against maxOutputTokens is not stated for every model, so only the
            # candidates' tokens are compared, never a false alarm on thoughts.
            limit = _positive(config.get("maxOutputTokens")) or _positive(config.get("max_output_tokens"))
            choices = _positive(config.get("candidateCount")) or _positive(config.get("candidate_count")) or 1
            return limit, choices, True
        options = get("options")
        limit = _positive(options.get("num_predict")) if isinstance(options, Mapping) else 0
        if not limit:
            return 0, 1, False
    return limit, max(_positive(get("n")), _positive(get("best_of")), 1), False


def implausible_output(request: Mapping[str, Any], usage: TokenUsage) -> tuple[str, ...]:
    """``output_over_max_tokens`` when the answer reports far more output than the request allowed."""
    if usage.output_tokens <= SLACK_TOKENS + 1:  # never "far above" any limit: skip reading the request
        return ()
    limit, choices, outside = _request_limit(request)
    if not limit:
        return ()
    output = usage.output_tokens - (usage.reasoning_output_tokens if outside else 0)
    allowed = limit * choices
    return (UsageFlag.OUTPUT_OVER_MAX_TOKENS.value,) if output > allowed * SLACK_RATIO + SLACK_TOKENS else ()
