"""Where a call goes and with which credential: decided from the config only, never by the client.

Base URL conventions per backend kind (as each provider documents its own base URL):
``openai``/``openai_compatible``: ``https://host/v1``; ``azure_openai``: ``https://<resource>.openai.azure.com``;
``anthropic``: ``https://api.anthropic.com``; ``gemini``: ``https://generativelanguage.googleapis.com``;
``ollama``: ``http://host:11434``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qs, quote

from aimeter.config import Backend, BackendKind
from aimeter.gateway.apis import Match

ANTHROPIC_VERSION = "2023-06-01"
AZURE_API_VERSION = "2024-10-21"
# Client headers worth passing on: they change the upstream's behaviour, not who pays. Values are validated.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._,=-]{1,200}")
PASS_THROUGH = {BackendKind.ANTHROPIC: ("anthropic-version", "anthropic-beta")}


def _query_value(query: str, name: str) -> str | None:
    values = parse_qs(query).get(name)
    return values[0] if values and _SAFE_VALUE.fullmatch(values[0]) else None


_BASES: dict[int, tuple[object, str]] = {}  # id(base_url) -> (base_url, its text): str() of a URL model is not free


def _base(backend: Backend) -> str:
    url = backend.base_url
    entry = _BASES.get(id(url))
    if entry is None or entry[0] is not url:  # the object is kept in the entry, so its id is never reused
        entry = _BASES[id(url)] = (url, str(url).rstrip("/"))
    return entry[1]


def upstream_target(backend: Backend, match: Match, upstream_model: str, query: str) -> str:
    """The full upstream URL for this call."""
    base = _base(backend)
    spec = match.spec
    if backend.kind is BackendKind.AZURE_OPENAI:
        version = _query_value(query, "api-version") or AZURE_API_VERSION
        return f"{base}/openai/deployments/{quote(upstream_model, safe='')}{spec.upstream_suffix}?api-version={version}"
    if backend.kind is BackendKind.GEMINI:
        alt = "?alt=sse" if _query_value(query, "alt") == "sse" else ""
        return f"{base}/{match.version or 'v1beta'}/models/{quote(upstream_model, safe='')}:{match.method}{alt}"
    return base + spec.upstream_suffix


def upstream_headers(backend: Backend, credential: str | None, client_headers: Mapping[str, str]) -> dict[str, str]:
    """Content type, the provider credential in the provider's own header, and safe pass-through headers."""
    headers = {"content-type": "application/json"}
    kind = backend.kind
    for name in PASS_THROUGH.get(kind, ()):
        value = client_headers.get(name)
        if value is not None and _SAFE_VALUE.fullmatch(value):
            headers[name] = value
    if kind is BackendKind.ANTHROPIC:
        headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
    if not credential:
        return headers
    if kind is BackendKind.ANTHROPIC:
        headers["x-api-key"] = credential
    elif kind is BackendKind.AZURE_OPENAI:
        headers["api-key"] = credential
    elif kind is BackendKind.GEMINI:
        headers["x-goog-api-key"] = credential
    else:
        headers["authorization"] = f"Bearer {credential}"
    return headers
