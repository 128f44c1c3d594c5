"""The table of wire APIs the gateway serves: how each names its model, streams, reports usage and errors.

Adding an API is one ``ApiSpec`` row plus its pure usage module; the proxy itself is generic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aimeter.config import BackendKind
from aimeter.gateway.errors import anthropic_error, gemini_error, ollama_error, openai_error
from aimeter.gateway.streams import StreamUsage
from aimeter.gateway.usage import Extracted
from aimeter.gateway.usage_anthropic import AnthropicStream, from_anthropic_body
from aimeter.gateway.usage_gemini import GeminiStream, from_gemini_body
from aimeter.gateway.usage_ollama import OllamaStream, from_ollama_body, ollama_streams
from aimeter.gateway.usage_openai import (
    OpenAIChatStream,
    OpenAICompletionsStream,
    ResponsesStream,
    from_completions_body,
    from_embeddings_body,
    from_openai_body,
    from_responses_body,
)

OPENAI_LIKE = frozenset({BackendKind.OPENAI, BackendKind.OPENAI_COMPATIBLE})


def stream_flag(request: dict[str, Any], _method: str) -> bool:
    """OpenAI and Anthropic stream only when the body says ``"stream": true``."""
    return request.get("stream") is True


def never(_request: dict[str, Any], _method: str) -> bool:
    return False


def gemini_streams(_request: dict[str, Any], method: str) -> bool:
    """Gemini streams by method name, not by a body field."""
    return method == "streamGenerateContent"


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
    # Ask for stream_options.include_usage (OpenAI, Azure >= 2024-09-01, vLLM, SGLang, TGI, llama.cpp all honour
    # it) when the client did not, and strip what it adds on the way back.
    inject_usage: bool = False
    model_in_path: bool = False  # Gemini names the model in the URL, not the body


@dataclass(frozen=True)
class Match:
    spec: ApiSpec
    model: str = ""  # from the path (Gemini, Azure deployments); '' when the body names it
    method: str = ""  # Gemini's generateContent / streamGenerateContent
    version: str = ""  # Gemini's API version segment (v1 or v1beta), kept for the upstream call


AZURE = frozenset({BackendKind.AZURE_OPENAI})
OPENAI_CHAT = ApiSpec("openai.chat", OPENAI_LIKE | AZURE, from_openai_body, OpenAIChatStream, openai_error,
                      "/chat/completions", inject_usage=True)
OPENAI_COMPLETIONS = ApiSpec("openai.completions", OPENAI_LIKE | AZURE, from_completions_body,
                             OpenAICompletionsStream, openai_error, "/completions", inject_usage=True)
OPENAI_EMBEDDINGS = ApiSpec("openai.embeddings", OPENAI_LIKE | AZURE, from_embeddings_body, None, openai_error,
                            "/embeddings", is_stream=never)
OPENAI_RESPONSES = ApiSpec("openai.responses", OPENAI_LIKE, from_responses_body, ResponsesStream, openai_error,
                           "/responses")
ANTHROPIC_MESSAGES = ApiSpec("anthropic.messages", frozenset({BackendKind.ANTHROPIC}), from_anthropic_body,
                             AnthropicStream, anthropic_error, "/v1/messages")
GEMINI = ApiSpec("gemini.generate_content", frozenset({BackendKind.GEMINI}), from_gemini_body, GeminiStream,
                 gemini_error, "", is_stream=gemini_streams, model_in_path=True)
_OLLAMA = frozenset({BackendKind.OLLAMA})
OLLAMA_CHAT = ApiSpec("ollama.chat", _OLLAMA, from_ollama_body, OllamaStream, ollama_error, "/api/chat",
                      is_stream=ollama_streams, ndjson=True)
OLLAMA_GENERATE = ApiSpec("ollama.generate", _OLLAMA, from_ollama_body, OllamaStream, ollama_error, "/api/generate",
                          is_stream=ollama_streams, ndjson=True)


def _azure(spec: ApiSpec) -> ApiSpec:
    """Azure deployment URLs: same shapes, the deployment (our model name) in the path, Azure backends only."""
    return ApiSpec(spec.api, AZURE, spec.from_body, spec.stream_reader, spec.error, spec.upstream_suffix,
                   is_stream=spec.is_stream, inject_usage=spec.inject_usage, model_in_path=True)


FIXED_ROUTES: dict[str, ApiSpec] = {
    "/v1/chat/completions": OPENAI_CHAT,
    "/v1/completions": OPENAI_COMPLETIONS,
    "/v1/embeddings": OPENAI_EMBEDDINGS,
    "/v1/responses": OPENAI_RESPONSES,
    "/v1/messages": ANTHROPIC_MESSAGES,
    "/api/chat": OLLAMA_CHAT,
    "/api/generate": OLLAMA_GENERATE,
}
_DEPLOYMENT = r"/openai/deployments/(?P<model>[A-Za-z0-9._-]{1,128})"
PATTERN_ROUTES: list[tuple[re.Pattern[str], ApiSpec]] = [
    (re.compile(r"/(?P<version>v1beta|v1)/models/(?P<model>[A-Za-z0-9._-]{1,128})"
                r":(?P<method>generateContent|streamGenerateContent)"), GEMINI),
    (re.compile(_DEPLOYMENT + "/chat/completions"), _azure(OPENAI_CHAT)),
    (re.compile(_DEPLOYMENT + "/completions"), _azure(OPENAI_COMPLETIONS)),
    (re.compile(_DEPLOYMENT + "/embeddings"), _azure(OPENAI_EMBEDDINGS)),
]


def match_route(path: str) -> Match | None:
    """Which API a request path is; None for paths the gateway does not serve."""
    spec = FIXED_ROUTES.get(path)
    if spec is not None:
        return Match(spec)
    for pattern, spec in PATTERN_ROUTES:
        found = pattern.fullmatch(path)
        if found:
            groups = found.groupdict()
            return Match(spec, groups.get("model") or "", groups.get("method") or "", groups.get("version") or "")
    return None
