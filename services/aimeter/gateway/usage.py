"""Shared pieces of usage extraction: the result type and strict count readers.

Each API's mapping lives in its own ``usage_<api>.py`` module as pure functions from a decoded
response body (or stream events) to normalized token classes (see ``aimeter.events.usage``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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
            source: UsageSource, problem: str = "", *, compute_seconds: float | None = None) -> Extracted:
    """Map ``usage``; any bad value becomes ``UsageSource.NONE`` with the reason instead of an exception."""
    try:
        tokens = mapper(usage)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        return Extracted(TokenUsage(), UsageSource.NONE, served, problem=f"invalid usage: {exc}")
    return Extracted(tokens, source, served, compute_seconds, problem)


def details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else None


