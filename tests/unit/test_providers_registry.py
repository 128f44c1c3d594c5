"""The provider registry: every backend kind has exactly one unit, and the shared paths dispatch by header style."""

import ast
from pathlib import Path

from aimeter import fake_upstream
from aimeter.config import BackendKind
from aimeter.gateway import providers
from aimeter.gateway.providers import BY_KIND, KEY_HEADERS, model_list_for, presented_key
from aimeter.gateway.providers.anthropic import anthropic_error
from aimeter.gateway.providers.gemini import gemini_error
from aimeter.gateway.providers.openai import openai_error


def test_every_backend_kind_has_one_provider_unit() -> None:
    assert set(BY_KIND) == set(BackendKind)
    assert len({p.name for p in providers.PROVIDERS}) == len(providers.PROVIDERS)


def test_key_headers_keep_the_order_the_gateway_always_tried() -> None:
    assert KEY_HEADERS == ("x-api-key", "api-key", "x-goog-api-key")
    assert presented_key({"authorization": "Bearer a", "x-api-key": "b"}, "key=c") == "a"
    assert presented_key({"api-key": "d"}, "") == "d"
    assert presented_key({}, "key=c") == "c"


def test_v1_models_is_answered_by_the_api_whose_sdk_asks() -> None:
    def error_of(headers: dict[str, str]) -> object:
        return error_of_path("/v1/models", headers)

    assert error_of({"authorization": "Bearer k"}) is openai_error
    assert error_of({}) is openai_error
    assert error_of({"x-api-key": "k", "anthropic-version": "2023-06-01"}) is anthropic_error
    assert error_of({"x-goog-api-key": "k", "x-goog-api-client": "google-genai-sdk"}) is gemini_error
    assert error_of_path("/v1beta/models") is gemini_error
    assert model_list_for("/v1/chat/completions", {}) is None


def error_of_path(path: str, headers: dict[str, str] | None = None) -> object:
    listing = model_list_for(path, headers or {})
    return listing.error if listing is not None else None


def test_the_fake_upstream_imports_nothing_from_the_gateway() -> None:
    """The fake writes each provider's shapes from the provider's documentation: were it to import the gateway's
    error tables or shapes, a wrong mapping would be agreed on by both sides and no test would see it."""
    fake = Path(fake_upstream.__file__).parent
    for source in sorted(fake.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            assert not any(name.startswith("aimeter.gateway") for name in names), f"{source.name} imports {names}"
