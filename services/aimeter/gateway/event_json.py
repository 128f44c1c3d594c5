"""UsageEvent v1 as JSON bytes, without building the pydantic model on the request path.

``UsageEvent(...)`` followed by ``model_dump_json()`` was a measurable share of the gateway's CPU per
request (docs/decisions.md), spent to re-validate values that were validated where they were made:
``TokenUsage`` and ``Attribution`` are the pydantic models themselves, enums are enums, times come from our
clock. What is left to check is cheap and checked here; anything out of bounds goes through the model
instead, which then refuses it exactly as before. So the model stays the one source of the contract: the
field order is compared with it when this module is imported, and a unit test checks that this encoder's
bytes equal ``model_dump_json()`` for many generated events.
"""

from __future__ import annotations

import math
from datetime import datetime

import orjson

from aimeter.events import Attribution, Deployment, Status, TokenUsage, UsageEvent, UsageSource
from aimeter.events.usage import MAX_FLAGS_LEN, MAX_LABEL_LEN, MAX_PROBLEM_LEN, SCHEMA_VERSION

FIELDS = ("schema_version", "event_id", "gateway_id", "started_at", "first_token_at", "ended_at", "api", "backend",
          "provider", "deployment", "model_requested", "model_served", "stream", "status", "http_status",
          "usage_source", "usage", "backend_compute_seconds", "attribution", "usage_problem", "upstream_error_type",
          "usage_flags", "credential_id", "upstream_project", "service_tier")
if tuple(UsageEvent.model_fields) != FIELDS:  # fail at start, not with a subtly different event in Kafka
    raise RuntimeError(f"UsageEvent fields changed to {tuple(UsageEvent.model_fields)}; update {__name__}")
_OPTIONS = orjson.OPT_UTC_Z  # pydantic writes UTC as "Z"


def encode_usage_event(*, event_id: str, gateway_id: str, started_at: datetime, first_token_at: datetime | None,
                       ended_at: datetime, api: str, backend: str, provider: str, deployment: Deployment,
                       model_requested: str, model_served: str, stream: bool, status: Status, http_status: int,
                       usage_source: UsageSource, usage: TokenUsage, backend_compute_seconds: float | None,
                       attribution: Attribution, usage_problem: str = "", upstream_error_type: str = "",
                       usage_flags: str = "", credential_id: str = "", upstream_project: str = "",
                       service_tier: str = "") -> bytes:
    """The event's JSON, byte for byte what ``UsageEvent(...).model_dump_json()`` writes for these values."""
    if (max(len(gateway_id), len(api), len(backend), len(provider), len(model_requested), len(model_served),
            len(upstream_error_type), len(credential_id), len(upstream_project), len(service_tier)) > MAX_LABEL_LEN
            or len(usage_problem) > MAX_PROBLEM_LEN or len(usage_flags) > MAX_FLAGS_LEN
            or not 0 <= http_status <= 999
            or (backend_compute_seconds is not None
                and not (math.isfinite(backend_compute_seconds) and backend_compute_seconds >= 0))):
        # Out of the fast path's bounds: the model decides (and raises if the event is invalid).
        return UsageEvent(
            event_id=event_id, gateway_id=gateway_id, started_at=started_at, first_token_at=first_token_at,
            ended_at=ended_at, api=api, backend=backend, provider=provider, deployment=deployment,
            model_requested=model_requested, model_served=model_served, stream=stream, status=status,
            http_status=http_status, usage_source=usage_source, usage=usage,
            backend_compute_seconds=backend_compute_seconds, attribution=attribution, usage_problem=usage_problem,
            upstream_error_type=upstream_error_type, usage_flags=usage_flags, credential_id=credential_id,
            upstream_project=upstream_project, service_tier=service_tier,
        ).model_dump_json().encode()
    # A frozen pydantic model's __dict__ holds exactly its fields, in declaration order.
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "event_id": event_id, "gateway_id": gateway_id, "started_at": started_at,
        "first_token_at": first_token_at, "ended_at": ended_at, "api": api, "backend": backend,
        "provider": provider, "deployment": deployment, "model_requested": model_requested,
        "model_served": model_served, "stream": stream, "status": status, "http_status": http_status,
        "usage_source": usage_source, "usage": usage.__dict__, "backend_compute_seconds": backend_compute_seconds,
        "attribution": attribution.__dict__, "usage_problem": usage_problem, "upstream_error_type": upstream_error_type,
        "usage_flags": usage_flags, "credential_id": credential_id, "upstream_project": upstream_project,
        "service_tier": service_tier,
    }, option=_OPTIONS)
