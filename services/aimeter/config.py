"""Gateway and pricer config: backends, models and self-hosted GPU costs, from one YAML file.

Parsing is pure (text in, model out); reading the file and the credential environment
happens in :func:`load_config` and :func:`resolve_credential`, at the edge.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)

from aimeter.budgets.spec import BudgetsConfig
from aimeter.config_errors import describe, route_problems
from aimeter.events import Deployment
from aimeter.gateway.providers import BACKEND_KINDS
from aimeter.gateway.ratelimit_gate import RateLimits


class ConfigError(ValueError):
    """The config file is invalid; the message lists every problem with its path."""


# A backend's ``kind`` names the provider unit that calls it (``aimeter.gateway.providers``): a new unit's
# kinds become valid here without an edit.
if TYPE_CHECKING:  # the members are known at run time only: to a type checker a kind is some StrEnum
    BackendKind = StrEnum
else:
    BackendKind = StrEnum("BackendKind", [(kind.upper(), kind) for kind in BACKEND_KINDS])


Money = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=12)]


def _utc_instant(value: object) -> object:
    """Dates mean midnight UTC and naive times are UTC, so an effective date reads the same everywhere."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    return value


UtcInstant = Annotated[datetime, BeforeValidator(_utc_instant)]


class GpuCost(BaseModel):
    """What a self-hosted backend costs to run, and how many tokens it sustains, over one period.

    Periods start and end on whole hours (UTC) because the fully loaded view bills GPUs by the
    hour; ``effective_to`` is exclusive and omitted for the period in force now.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_type: str
    gpu_count: int = Field(ge=1)
    usd_per_gpu_hour: Money | None = Field(None, description="Per GPU; or give usd_per_node_hour.")
    usd_per_node_hour: Money | None = Field(None, description="The whole backend per hour (all its GPUs).")
    sustained_tokens_per_second: Decimal = Field(gt=0, decimal_places=6)
    parallel_requests: int = Field(1, ge=1, description="Requests served at once; GPU-seconds are shared by them.")
    effective_from: UtcInstant | None = Field(None, description="Inclusive; omitted = since always.")
    effective_to: UtcInstant | None = Field(None, description="Exclusive; omitted = still in force.")

    @model_validator(mode="after")
    def _one_price_whole_hours(self) -> GpuCost:
        problems = []
        if (self.usd_per_gpu_hour is None) == (self.usd_per_node_hour is None):
            problems.append("give exactly one of usd_per_gpu_hour and usd_per_node_hour")
        for name in ("effective_from", "effective_to"):
            value = getattr(self, name)
            if value is not None and (value.minute, value.second, value.microsecond) != (0, 0, 0):
                problems.append(f"{name} must be a whole hour (GPU cost is billed by the hour), got {value}")
        if self.effective_from and self.effective_to and self.effective_to <= self.effective_from:
            problems.append("effective_to must be after effective_from")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def usd_per_hour(self) -> Decimal:
        """The whole backend's cost per hour."""
        if self.usd_per_node_hour is not None:
            return self.usd_per_node_hour
        assert self.usd_per_gpu_hour is not None  # enforced above
        return self.usd_per_gpu_hour * self.gpu_count

    def covers(self, moment: datetime) -> bool:
        starts = self.effective_from is None or self.effective_from <= moment
        return starts and (self.effective_to is None or moment < self.effective_to)


class ReferenceModel(BaseModel):
    """The proprietary model a self-hosted backend is compared against for savings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str


class UpstreamAccount(BaseModel):
    """Which provider account a backend's credential belongs to, so usage can be grouped the way the provider's
    own usage and cost reports group it (``aimeter reconcile --provider``). Ids only, never the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credential_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
                               description="A stable name for the credential (e.g. the provider's API key id); "
                                           "never the key itself.")
    project_id: str | None = Field(None, max_length=128, description="OpenAI project id (proj_...) of the key.")
    workspace_id: str | None = Field(None, max_length=128,
                                     description="Anthropic workspace id (wrkspc_...); unset: the default.")

    @field_validator("credential_id")
    @classmethod
    def _not_a_secret(cls, value: str) -> str:
        if value.startswith("sk-"):
            raise ValueError("credential_id looks like an API key (sk-...): give an id or a name, never the secret")
        return value


class Backend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: BackendKind
    base_url: HttpUrl
    deployment: Deployment
    provider: str = Field(description="Price-book provider id (openai, anthropic, google, vllm, …).")
    api_key_env: str | None = Field(None, description="Env var holding the provider credential.")
    api_key_file: Path | None = Field(None, description="File holding the provider credential.")
    gpu: GpuCost | list[GpuCost] | None = Field(None, description="GPU cost, or a list of dated periods.")
    reference_model: ReferenceModel | None = None
    account: UpstreamAccount | None = Field(None, description="Provider account ids of the credential (reconcile).")

    @model_validator(mode="after")
    def _self_hosted_has_cost(self) -> Backend:
        if self.deployment is Deployment.SELF_HOSTED and not self.gpu_periods:
            raise ValueError("a self_hosted backend must declare `gpu` (its cost model)")
        periods = sorted(self.gpu_periods, key=lambda p: p.effective_from or datetime.min.replace(tzinfo=UTC))
        for earlier, later in itertools.pairwise(periods):
            end, start = earlier.effective_to, later.effective_from
            if end is None or start is None or start < end:
                raise ValueError(f"gpu periods overlap: one starting {earlier.effective_from} and one starting "
                                 f"{later.effective_from} (give each an effective_from and effective_to)")
        return self

    @property
    def gpu_periods(self) -> tuple[GpuCost, ...]:
        if self.gpu is None:
            return ()
        return tuple(self.gpu) if isinstance(self.gpu, list) else (self.gpu,)

    def gpu_at(self, moment: datetime) -> GpuCost | None:
        """The GPU cost period in force at ``moment``, if any."""
        return next((p for p in self.gpu_periods if p.covers(moment)), None)


class ModelRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    upstream_model: str | None = Field(None, description="Name sent upstream if it differs (alias).")
    priced_as: ReferenceModel | None = Field(
        None, description="Price-book provider and model this route is priced as (e.g. an Azure deployment name "
                          "priced as openai/gpt-4o); default: the backend's provider and the model's own names.")


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backends: dict[str, Backend]
    models: dict[str, ModelRoute]
    price_overrides: Path | None = Field(
        None, description="Price overrides YAML (relative to this file); default schemas/price_overrides.yaml."
    )
    rate_limits: RateLimits | None = Field(None, description="Requests and tokens per minute per team and key.")
    budgets: BudgetsConfig | None = Field(None, description="USD budgets per key, team, project or user.")

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
    # Cross-references are checked on the raw YAML too, so they are reported with the field errors.
    problems: list[Mapping[str, Any]] = list(route_problems(data))
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems += [e for e in exc.errors() if "unknown backend" not in str(e["msg"])]
        config = None
    if problems:
        lines = describe(problems, data, text, source)
        raise ConfigError(f"{source}: invalid config ({len(lines)} problems):\n  " + "\n  ".join(lines))
    assert config is not None
    return config


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    config = parse_config(text, str(path))
    if config.price_overrides is not None and not config.price_overrides.is_absolute():
        config = config.model_copy(update={"price_overrides": path.parent / config.price_overrides})
    return config


def resolve_credential(backend: Backend) -> str | None:
    """The provider credential, from a secret file or the environment; never from the client."""
    if backend.api_key_file is not None:
        return backend.api_key_file.read_text(encoding="utf-8").strip()
    if backend.api_key_env:
        return os.environ.get(backend.api_key_env)
    return None
