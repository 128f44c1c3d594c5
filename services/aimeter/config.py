"""Gateway and pricer config: backends, models and self-hosted GPU costs, from one YAML file.

Parsing is pure (text in, model out); reading the file and the credential environment
happens in :func:`load_config` and :func:`resolve_credential`, at the edge.
"""

from __future__ import annotations

import os
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, model_validator

from aimeter.events import Deployment


class ConfigError(ValueError):
    """The config file is invalid; the message lists every problem with its path."""


class BackendKind(StrEnum):
    OPENAI = "openai"
    AZURE_OPENAI = "azure_openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    OPENAI_COMPATIBLE = "openai_compatible"
    OLLAMA = "ollama"


Money = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=12)]


class GpuCost(BaseModel):
    """What a self-hosted backend costs to run, and how many tokens it sustains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_type: str
    gpu_count: int = Field(ge=1)
    usd_per_gpu_hour: Money
    sustained_tokens_per_second: Decimal = Field(gt=0)


class ReferenceModel(BaseModel):
    """The proprietary model a self-hosted backend is compared against for savings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str


class Backend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: BackendKind
    base_url: HttpUrl
    deployment: Deployment
    provider: str = Field(description="Price-book provider id (openai, anthropic, google, vllm, …).")
    api_key_env: str | None = Field(None, description="Env var holding the provider credential.")
    api_key_file: Path | None = Field(None, description="File holding the provider credential.")
    gpu: GpuCost | None = None
    reference_model: ReferenceModel | None = None

    @model_validator(mode="after")
    def _self_hosted_has_cost(self) -> Backend:
        if self.deployment is Deployment.SELF_HOSTED and self.gpu is None:
            raise ValueError("a self_hosted backend must declare `gpu` (its cost model)")
        return self


class ModelRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    upstream_model: str | None = Field(None, description="Name sent upstream if it differs (alias).")


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backends: dict[str, Backend]
    models: dict[str, ModelRoute]

    @model_validator(mode="after")
    def _routes_resolve(self) -> GatewayConfig:
        missing = [f"models.{m}: unknown backend {r.backend!r}" for m, r in self.models.items()
                   if r.backend not in self.backends]
        if missing:
            raise ValueError("; ".join(missing))
        return self

    def route(self, model: str) -> tuple[str, Backend, ModelRoute] | None:
        """The backend serving ``model``; None when the model is not configured."""
        route = self.models.get(model)
        if route is None:
            return None
        return route.backend, self.backends[route.backend], route


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Validate YAML text; every error is reported with its dotted path."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines)) from None


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_config(text, str(path))


def resolve_credential(backend: Backend) -> str | None:
    """The provider credential, from a secret file or the environment; never from the client."""
    if backend.api_key_file is not None:
        return backend.api_key_file.read_text(encoding="utf-8").strip()
    if backend.api_key_env:
        return os.environ.get(backend.api_key_env)
    return None
