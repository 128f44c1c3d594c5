"""Budgets as the gateway config YAML writes them (``budgets:``), validated with the rest of the config."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aimeter.budgets.model import Budget, BudgetError, Enforcement, KafkaDown, Period, ScopeKind, zone


def known_zone(value: str) -> str:
    """``value`` when it names an IANA timezone; a ValueError pydantic reports with the field otherwise."""
    try:
        zone(value)
    except BudgetError as exc:
        raise ValueError(f"unknown IANA timezone {value!r} (e.g. 'Europe/Paris', 'UTC')") from exc
    return value


class _Cap(BaseModel):
    """What every budget entry states, in the config or on a key: its scope is the subclass's business."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    usd: Decimal = Field(ge=0, decimal_places=12)
    period: Period = Period.MONTH
    timezone: str = "UTC"
    enforcement: Enforcement = Enforcement.HARD
    on_kafka_down: KafkaDown = KafkaDown.FAIL_OPEN

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    def _budget(self, scope: ScopeKind, value: str) -> Budget:
        return Budget(self.name, scope, value, self.usd, self.period, self.timezone, self.enforcement,
                      self.on_kafka_down)


class BudgetSpec(_Cap):
    """One budget: ``{name, scope, value, usd, period, timezone, enforcement, on_kafka_down}``."""

    scope: ScopeKind
    value: str = Field(min_length=1, max_length=128, description="The key id, team, project or user it caps.")

    def budget(self) -> Budget:
        return self._budget(self.scope, self.value)


class BudgetsConfig(BaseModel):
    """The ``budgets:`` section: the caps, and the output limit a request without ``max_tokens`` reserves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caps: list[BudgetSpec] = Field(default_factory=list)
    output_limit: int = Field(32_768, ge=1, description="Output tokens reserved when a request sets no cap.")
    output_limits: dict[str, int] = Field(default_factory=dict, description="Per model: its output token limit.")
    start_wait_s: float = Field(15.0, ge=0, description="At start, how long the gateway waits for the ledger to be "
                                "current (spend loaded, topic caught up) before it serves anyway.")
    pricer_lag_s: float = Field(600.0, ge=0, description="How far the pricer may trail the usage topic: spend of "
                                "events started longer ago is read from ClickHouse at start, the rest from the topic.")

    @field_validator("caps")
    @classmethod
    def _unique_names(cls, caps: list[BudgetSpec]) -> list[BudgetSpec]:
        names = [c.name for c in caps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"budget names must be unique; repeated: {', '.join(twice)}")
        return caps


class KeyBudgetSpec(_Cap):
    """A budget in a gateway key's record (``limits["budgets"]``, written by ``aimeter budgets set --key``): its
    scope is that key."""

    def budget(self, key_id: str) -> Budget:
        return self._budget(ScopeKind.KEY, key_id)

    def entry(self) -> dict[str, str]:
        """The JSON a key record's ``limits["budgets"]`` holds for it (Decimal as text)."""
        return {k: str(v) for k, v in self.model_dump(mode="json").items()}


def key_budgets(records: Mapping[str, Any]) -> tuple[dict[str, Budget], list[str]]:
    """The budgets the active keys' records carry, by name, and one problem line per entry that was skipped."""
    found: dict[str, Budget] = {}
    problems: list[str] = []
    for key_id, record in records.items():
        limits = getattr(record, "limits", None) or {}
        entries = limits.get("budgets") or []
        if getattr(record, "revoked_at", "") or not isinstance(entries, list):
            continue
        for entry in entries:
            try:
                budget = KeyBudgetSpec.model_validate(entry).budget(key_id)
            except ValueError as exc:
                problems.append(f"key {key_id}: budget {entry!r} skipped: {exc}")
                continue
            found[budget.name] = budget
    return found, problems
