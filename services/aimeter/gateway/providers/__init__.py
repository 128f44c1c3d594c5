"""Provider API units and the registry the generic proxy reads.

Each module is one provider API and owns everything about it: its routes, where the client's key is,
its upstream URL and credential header, usage extraction (whole and streamed), its error shape and
its model list.

    base.py       ApiSpec, Match, Provider, ModelList: what a unit declares
    openai.py     OpenAI Chat / Completions / Embeddings / Responses (also vLLM, SGLang, TGI, llama.cpp)
    azure.py      Azure OpenAI deployment URLs (OpenAI's shapes and usage)
    anthropic.py  Anthropic Messages
    gemini.py     Gemini generateContent / streamGenerateContent
    ollama.py     Ollama's native /api/chat and /api/generate

Adding a provider is one new module plus one row in ``PROVIDERS``: the config's ``BackendKind`` is built
from the kinds the units declare. The tables below are built once at import (and each backend's
``Upstream`` once at start), so a request pays one dict lookup to find its API and one for its backend's
upstream. Nothing here imports ``aimeter.config`` at run time (it imports this registry).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from aimeter.gateway.providers import anthropic, azure, gemini, ollama, openai
from aimeter.gateway.providers.base import SAFE_VALUE, ApiSpec, Match, ModelList, Provider

if TYPE_CHECKING:
    from aimeter.config import Backend

# Order matters only where two units read the same thing: the client's key headers are tried in this order.
PROVIDERS: tuple[Provider, ...] = (openai.PROVIDER, anthropic.PROVIDER, azure.PROVIDER, gemini.PROVIDER,
                                   ollama.PROVIDER)


def _fixed_routes() -> dict[str, ApiSpec]:
    routes: dict[str, ApiSpec] = {}
    for provider in PROVIDERS:
        for path, spec in provider.routes.items():
            if path in routes:
                raise ValueError(f"route {path} is declared by two provider units")
            routes[path] = spec
    return routes


def _by_kind() -> dict[str, Provider]:
    by_kind: dict[str, Provider] = {}
    for provider in PROVIDERS:
        for kind in provider.kinds:
            if kind in by_kind:
                raise ValueError(f"backend kind {kind} is claimed by {by_kind[kind].name} and {provider.name}")
            by_kind[kind] = provider
    return by_kind


FIXED_ROUTES = _fixed_routes()
PATTERN_ROUTES: tuple[tuple[re.Pattern[str], ApiSpec], ...] = tuple(
    pair for provider in PROVIDERS for pair in provider.patterns)
BY_KIND = _by_kind()
BACKEND_KINDS: tuple[str, ...] = tuple(BY_KIND)  # the values of ``config.BackendKind``, in registry order
# Header names a client's SDK puts its key in, besides ``Authorization: Bearer``, in registry order.
KEY_HEADERS: tuple[str, ...] = tuple(dict.fromkeys(
    p.key_header for p in PROVIDERS if p.key_header and p.key_header != "authorization"))
# GET path -> the model lists answering on it, the ones with a ``claims`` test first.
MODEL_LISTS: dict[str, tuple[ModelList, ...]] = {}
for _list in sorted((m for p in PROVIDERS for m in p.model_lists), key=lambda m: m.claims is None):
    MODEL_LISTS[_list.path] = (*MODEL_LISTS.get(_list.path, ()), _list)


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


def model_list_for(path: str, headers: Mapping[str, str]) -> ModelList | None:
    """The model list a ``GET path`` asks for (None: not a model-list path)."""
    lists = MODEL_LISTS.get(path)
    if lists is None:
        return None
    return next((m for m in lists if m.claims is None or m.claims(headers)), None)


def presented_key(headers: Mapping[str, str], query: str) -> str:
    """The gateway key, sent the way each SDK sends its own API key (``query``: routes that take ``?key=`` only)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in KEY_HEADERS:
        if headers.get(name):
            return headers[name].strip()
    return (parse_qs(query).get("key") or [""])[0] if query else ""


@dataclass(frozen=True, slots=True)
class Upstream:
    """One backend's upstream, decided once at start from the config: never by the client."""

    base: str  # the base URL's text, without a trailing slash
    target: Callable[[str, Match, str, str], str]
    fixed: dict[str, str]  # content type, the provider's default headers and the credential in its own header
    pass_through: tuple[str, ...]

    def url(self, match: Match, upstream_model: str, query: str) -> str:
        return self.target(self.base, match, upstream_model, query)

    def headers(self, client_headers: Mapping[str, str]) -> dict[str, str]:
        """The fixed headers plus the client's pass-through headers whose value is safe (they win over defaults)."""
        headers = self.fixed.copy()
        for name in self.pass_through:
            value = client_headers.get(name)
            if value is not None and SAFE_VALUE.fullmatch(value):
                headers[name] = value
        return headers


def upstream_for(backend: Backend, credential: str | None) -> Upstream:
    """What the gateway builds once per backend at start, so a request only fills in the URL's variable part."""
    provider = BY_KIND[backend.kind]
    fixed = {"content-type": "application/json", **provider.default_headers}
    if credential:
        name, prefix = provider.credential
        fixed[name] = prefix + credential
    return Upstream(str(backend.base_url).rstrip("/"), provider.target, fixed, provider.pass_through)


def upstream_target(backend: Backend, match: Match, upstream_model: str, query: str) -> str:
    """The full upstream URL for this call (the gateway uses its ``Upstream`` per backend; this is the same)."""
    return upstream_for(backend, None).url(match, upstream_model, query)


def upstream_headers(backend: Backend, credential: str | None, client_headers: Mapping[str, str]) -> dict[str, str]:
    """Content type, the provider credential in the provider's own header, and safe pass-through headers."""
    return upstream_for(backend, credential).headers(client_headers)
