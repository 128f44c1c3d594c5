"""What a provider unit declares: its wire APIs (``ApiSpec``), its upstream (``Provider``) and its model list.

The proxy and the app are generic: they read these rows, precomputed into tables by the registry
(``providers/__init__.py``), and never test a provider's name on the request path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aimeter.gateway.streams import StreamUsage
from aimeter.gateway.usage import Extracted

if TYPE_CHECKING:
    from aimeter.config import Backend

ErrorShape = Callable[[int, str, str | None], bytes]  # (status, message, param) -> the API's own error body
# Values of client headers and query parameters that may be passed on: validated, never copied blindly.
SAFE_VALUE = re.compile(r"[A-Za-z0-9._,=-]{1,200}")


def stream_flag(request: dict[str, Any], _method: str) -> bool:
    """OpenAI and Anthropic stream only when the body says ``"stream": true``."""
    return request.get("stream") is True


def never(_request: dict[str, Any], _method: str) -> bool:
    return False


def query_value(query: str, name: str) -> str | None:
    """A query parameter's first value, only when it is a safe token."""
    values = parse_qs(query).get(name)
    return values[0] if values and SAFE_VALUE.fullmatch(values[0]) else None


@dataclass(frozen=True)
class ApiSpec:
    """One wire API a client speaks to the gateway: how it names its model, streams, reports usage and errors."""

    api: str  # the event's ``api`` value
    kinds: frozenset[str]  # backend kinds that speak this API
    from_body: Callable[[Any], Extracted]
    stream_reader: Callable[[], StreamUsage] | None
    error: ErrorShape
    upstream_suffix: str  # appended to the backend's base URL (OpenAI kinds: after ``/v1``)
    is_stream: Callable[[dict[str, Any], str], bool] = stream_flag
    ndjson: bool = False
    # Ask for stream_options.include_usage (OpenAI, Azure >= 2024-09-01, vLLM, SGLang, TGI, llama.cpp all honour
    # it) when the client did not, and strip what it adds on the way back.
    inject_usage: bool = False
    model_in_path: bool = False  # Gemini and Azure deployments name the model in the URL, not the body
    key_in_query: bool = False  # the client's key may come as ``?key=`` (Gemini's SDKs and docs)


@dataclass(frozen=True)
class Match:
    spec: ApiSpec
    model: str = ""  # from the path (Gemini, Azure deployments); '' when the body names it
    method: str = ""  # Gemini's generateContent / streamGenerateContent
    version: str = ""  # Gemini's API version segment (v1 or v1beta), kept for the upstream call


def suffix_target(base: str, match: Match, _upstream_model: str, _query: str) -> str:
    """Most APIs: the backend's base URL plus the API's path."""
    return base + match.spec.upstream_suffix


@dataclass(frozen=True)
class ModelList:
    """``GET <path>``: the configured models this API can reach, in the API's own list shape."""

    path: str
    kinds: frozenset[str]  # models whose backend is of these kinds are listed
    render: Callable[[list[tuple[str, Backend]]], bytes]  # (model name, its backend) in config order -> body
    error: ErrorShape
    key_in_query: bool = False
    # Two APIs may share a path (OpenAI's and Anthropic's /v1/models): the first whose ``claims`` says yes
    # answers; None claims every request (the fallback).
    claims: Callable[[Mapping[str, str]], bool] | None = None


@dataclass(frozen=True)
class Provider:
    """One provider API: the routes clients call, where their SDK puts the key, and how the upstream is called."""

    name: str
    kinds: tuple[str, ...]  # the backend kinds (``kind:`` in the config) whose upstream this unit calls
    routes: Mapping[str, ApiSpec]  # exact POST paths
    patterns: tuple[tuple[re.Pattern[str], ApiSpec], ...] = ()  # POST paths carrying the model (and method)
    key_header: str = ""  # where this API's SDK sends its key ('authorization': as ``Bearer <key>``)
    credential: tuple[str, str] = ("authorization", "Bearer ")  # upstream header name and value prefix
    target: Callable[[str, Match, str, str], str] = suffix_target  # (base URL, match, upstream model, query)
    pass_through: tuple[str, ...] = ()  # client headers passed upstream when their value is safe
    default_headers: Mapping[str, str] = field(default_factory=dict)  # sent when the client did not pass them
    model_lists: tuple[ModelList, ...] = ()
