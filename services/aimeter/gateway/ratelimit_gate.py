"""Rate limits at the gateway: which limits apply to a request, what it reserves, and the headers it carries.

The gateway calls :meth:`RateGate.admit` once per request, just before forwarding, and :meth:`RateGate.settle`
once its usage event is emitted (the one usage path every API, stream, cancellation and error takes). The
counting itself is ``ratelimit.py`` (pure); this adapter reads the clocks.

Limits come from the config's ``rate_limits`` (per team, per key id) and from a key record's ``limits`` dict
(``{"rpm": N, "tpm": N}``), which wins for that key. They are enforced by each gateway replica on its own: with
``replicas: R`` set, each replica enforces ``limit // R`` (at least 1), so R replicas behind a balancing load
balancer admit at most the limit together; the headers report the replica's share, which is what it enforces.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aimeter.events import TokenUsage
from aimeter.gateway.keys import KeyRecord
from aimeter.gateway.ratelimit import (
    NEVER,
    Decision,
    Limit,
    RateLimiter,
    anthropic_headers,
    openai_headers,
    retry_headers,
)
from aimeter.gateway.streams import estimate_tokens, prompt_text
from aimeter.gateway.usage import _request_limit  # the one reading of every API's output cap (max_tokens...)

_UPSTREAM_LIMIT_HEADERS = (b"x-ratelimit-", b"anthropic-ratelimit-")
# The request fields _request_limit reads an output cap from (OpenAI, Anthropic, Responses, Gemini, Ollama).
_OUTPUT_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens", "generationConfig", "generation_config",
                "options")
SMALL_BODY = 16 * 1024  # bytes: a walk of a body this small cost ~3 us, more than the whole check otherwise


class RateLimit(BaseModel):
    """Requests and tokens (prompt plus output) per minute; an axis left out is not limited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute: input plus output, as the events count.")


class RateLimits(BaseModel):
    """The config file's ``rate_limits`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replicas: int = Field(1, ge=1, description="Gateway replicas sharing these limits: each enforces limit // R.")
    default_output_tokens: int = Field(
        4096, ge=0, description="Output tokens a request reserves when it sets no max_tokens (or its API's cap).")
    teams: dict[str, RateLimit] = Field(default_factory=dict, description="Per team name.")
    keys: dict[str, RateLimit] = Field(default_factory=dict, description="Per gateway key id (am_<id>_...).")


def _share(value: int | None, replicas: int) -> int:
    return max(1, value // replicas) if value else 0


def _key_limit(limits: Any, replicas: int) -> Limit | None:
    """A key record's ``limits`` dict as a Limit; None when it sets neither. Values that are not positive
    integers are ignored (the record is validated where it is written; the hot path never raises on it)."""
    if not limits or not isinstance(limits, Mapping):
        return None
    rpm, tpm = limits.get("rpm"), limits.get("tpm")
    limit = Limit(_share(rpm if type(rpm) is int and rpm > 0 else None, replicas),
                  _share(tpm if type(tpm) is int and tpm > 0 else None, replicas))
    return limit or None


class Grant:
    """One request's admission: the headers its answer carries, and (admitted) the reservation to settle; a
    refused one has ``refusal``, the 429's message."""

    __slots__ = ("decision", "headers", "refusal")

    def __init__(self, decision: Decision, headers: list[tuple[bytes, bytes]], refusal: str) -> None:
        self.decision, self.headers, self.refusal = decision, headers, refusal

    def stamp(self, message: dict[str, Any]) -> None:
        """Add the key's rate-limit headers to a response start; the upstream's own (its account's limits, not
        this key's) are dropped, so a client never reads two conflicting values."""
        # Header names reach here lowercased (http1.py lowercases the upstream's; ours are written so).
        kept = [h for h in message["headers"] if not h[0].startswith(_UPSTREAM_LIMIT_HEADERS)]
        message["headers"] = [*kept, *self.headers]


class RateGate:
    def __init__(self, config: RateLimits | None) -> None:
        self.config = config or RateLimits()
        replicas = self.config.replicas
        self.teams = {name: Limit(_share(lim.rpm, replicas), _share(lim.tpm, replicas))
                      for name, lim in self.config.teams.items()}
        self.keys = {key_id: Limit(_share(lim.rpm, replicas), _share(lim.tpm, replicas))
                     for key_id, lim in self.config.keys.items()}
        self.limiter = RateLimiter()
        self._cache: dict[tuple[str, str], tuple[object, list[tuple[str, Limit]]]] = {}

    def scopes(self, key: KeyRecord | None, team: str) -> list[tuple[str, Limit]]:
        """The limits that apply: the key's (its record's ``limits`` over the config's), then the team's. Cached
        per key and team until the key's record changes (a new record brings a new ``limits`` object); a request
        without a key is not cached (its team comes from a header: any string)."""
        if key is None:
            team_limit = self.teams.get(team)
            return [("team:" + team, team_limit)] if team_limit else []
        limits = getattr(key, "limits", None)
        cached = self._cache.get((key.key_id, team))
        if cached is not None and cached[0] is limits:
            return cached[1]
        scopes = []
        limit = _key_limit(limits, self.config.replicas) or self.keys.get(key.key_id)
        if limit:
            scopes.append(("key:" + key.key_id, limit))
        team_limit = self.teams.get(team)
        if team_limit:
            scopes.append(("team:" + team, team_limit))
        self._cache[key.key_id, team] = (limits, scopes)
        return scopes

    def reserve(self, body: dict[str, Any], size: int, api: str) -> int:
        """Worst-case tokens of a request: its prompt plus the most it may generate (max_tokens and its siblings
        times the choices; embeddings generate nothing). A body of ``size`` bytes up to ``SMALL_BODY`` reserves
        a token per 4 bytes of it, more than its prompt text (the JSON around it counts too) and no walk of
        the body; a larger one may carry images or audio as base64, so its prompt text is estimated."""
        prompt = -(-size // 4) if size <= SMALL_BODY else estimate_tokens(prompt_text(body))
        if api.endswith(".embeddings"):
            return prompt
        for name in _OUTPUT_CAPS:
            if name in body:
                break
        else:  # no cap at all (the common case): skip _request_limit's Mapping checks (~1 us)
            return prompt + self.config.default_output_tokens
        cap, choices, _ = _request_limit(body)
        return prompt + (cap * choices if cap else self.config.default_output_tokens)

    def admit(self, key: KeyRecord | None, team: str, body: dict[str, Any], size: int, api: str) -> Grant | None:
        """None when no limit applies (nothing to report or settle); else the grant, refused or not. ``body`` is
        the request's parsed JSON, ``size`` its length in bytes."""
        scopes = self.scopes(key, team)
        if not scopes:
            return None
        tokens = 0
        for _, limit in scopes:  # a loop, not any(generator): this runs for every limited request
            if limit.tpm:
                tokens = self.reserve(body, size, api)
                break
        decision = self.limiter.admit(time.monotonic_ns(), scopes, tokens)
        if api.startswith("anthropic."):
            headers = anthropic_headers(decision.requests, decision.tokens, datetime.now(UTC))
        else:
            headers = openai_headers(decision.requests, decision.tokens)
        if decision.admitted:
            return Grant(decision, headers, "")
        return Grant(decision, [*headers, *retry_headers(decision.wait_s)], refusal_message(decision, self.config))

    def settle(self, grant: Grant | None, usage: TokenUsage) -> None:
        """The request's reservation becomes what its event records (input plus output tokens)."""
        if grant is not None:
            self.limiter.settle(grant.decision, usage.input_tokens + usage.output_tokens)

    def release(self, grant: Grant | None) -> None:
        """The request was admitted here but refused by a budget before any upstream call: it counts nothing."""
        if grant is not None:
            self.limiter.release(grant.decision)


def refusal_message(decision: Decision, config: RateLimits) -> str:
    """The 429's message: which limit of which scope, the replica's share of it, and when to retry."""
    kind, _, name = decision.scope.partition(":")
    who = f"gateway key {name}" if kind == "key" else f"team {name!r}"
    per_minute = decision.limit.rpm if decision.axis == "requests" else decision.limit.tpm
    share = (f" (this gateway replica's share: the limit is divided across {config.replicas} replicas)"
             if config.replicas > 1 else "")
    if decision.wait_s == NEVER:
        return (f"rate limit: this request reserves about {decision.reserved} tokens (prompt estimate plus "
                f"max_tokens), more than the {per_minute} tokens per minute allowed for {who}{share}; it can "
                "never be admitted: lower max_tokens or split the request")
    return (f"rate limit reached for {who}: {per_minute} {decision.axis} per minute{share}; retry in "
            f"{decision.wait_s:.1f} s")
