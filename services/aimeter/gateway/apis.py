"""The table of wire APIs the gateway serves: how each names its model, streams, reports usage and errors.

Adding an API is one ``ApiSpec`` row plus its pure usage module; the proxy itself is generic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aimeter.config import BackendKind
from aimeter.gateway.errors import openai_error
from aimeter.gateway.streams import StreamUsage
from aimeter.gateway.usage import Extracted
from aimeter.gateway.usage_openai import OpenAIChatStream, from_openai_body

OPENAI_LIKE = frozenset({BackendKind.OPENAI, BackendKind.OPENAI_COMPATIBLE})


def stream_flag(request: dict[str, Any], _method: str) -> bool:
    """OpenAI and Anthropic stream only when the body says ``"stream": true``."""
    return request.get("stream") is True


@dataclass(frozen=True)
class ApiSpec:
    api: str  # the event's ``api`` value
    kinds: frozenset[BackendKind]  # backend kinds that speak this API
    from_body: Callable[[Any], Extracted]
    stream_reader: Callable[[], StreamUsage] | None
    error: Callable[[int, str, str | None], bytes]
    upstream_suffix: str  # appended to the backend's base URL (OpenAI kinds: after ``/v1``)
    is_stream: Callable[[dict[str, Any], str], bool] = stream_flag
    ndjson: bool = False
    inject_usage: bool = False  # ask OpenAI-compatible upstreams for include_usage, strip it on the way back
    model_in_path: bool = False  # Gemini names the model in the URL, not the body


@dataclass(frozen=True)
class Match:
    spec: ApiSpec
    model: str = ""  # from the path (Gemini, Azure deployments); '' when the body names it
    method: str = ""  # Gemini's generateContent / streamGenerateContent


OPENAI_CHAT = ApiSpec("openai.chat", OPENAI_LIKE | {BackendKind.AZURE_OPENAI}, from_openai_body, OpenAIChatStream,
                      openai_error, "/chat/completions", inject_usage=True)

FIXED_ROUTES: dict[str, ApiSpec] = {
    "/v1/chat/completions": OPENAI_CHAT,
}
PATTERN_ROUTES: list[tuple[re.Pattern[str], ApiSpec]] = []


def match_route(path: str) -> Match | None:
    """Which API a request path is; None for paths the gateway does not serve."""
    spec = FIXED_ROUTES.get(path)
    if spec is not None:
        return Match(spec)
    for pattern, spec in PATTERN_ROUTES:
        found = pattern.fullmatch(path)
        if found:
            groups = found.groupdict()
            return Match(spec, groups.get("model", ""), groups.get("method", ""))
    return None
