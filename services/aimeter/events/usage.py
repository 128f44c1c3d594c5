"""UsageEvent v1: the one contract between the gateway, Kafka and the pricer.

Token semantics are normalized once, in the gateway, so every consumer reads the same
meaning whatever API produced the event (the field descriptions below, also in schemas/usage_event.v1.json):

* ``input_tokens`` counts every prompt token, cached or not (OpenTelemetry GenAI semantics).
  ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` are *subsets* of it.
* ``output_tokens`` counts every generated token; ``reasoning_output_tokens`` is a subset.

OpenAI's ``prompt_tokens`` already includes cached tokens; Anthropic's ``input_tokens``
excludes them. The per-API extractors convert, so nothing downstream adds cache tokens twice.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Final = "1"

# Bounds on attribution so a hostile or buggy client cannot bloat every row downstream.
MAX_LABEL_LEN = 128
MAX_TAGS = 16
MAX_TAG_LEN = 64
# Bounds on the gateway's diagnosis fields (added to v1 as optional fields; old events read as "").
MAX_PROBLEM_LEN = 512
MAX_FLAGS_LEN = 256

Count = Annotated[int, Field(ge=0, le=2**40)]
Label = Annotated[str, Field(max_length=MAX_LABEL_LEN)]
Problem = Annotated[str, Field(max_length=MAX_PROBLEM_LEN)]
Flags = Annotated[str, Field(max_length=MAX_FLAGS_LEN)]


class UsageFlag(StrEnum):
    """Implausible usage, kept as reported and flagged (``UsageEvent.usage_flags``), never dropped."""

    OUTPUT_OVER_MAX_TOKENS = "output_over_max_tokens"  # far more output than the request allowed
    USAGE_DECREASED = "usage_decreased"  # a running count went down within one stream


class Status(StrEnum):
    """How the upstream attempt ended, from the gateway's point of view."""

    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_CANCELLED = "client_cancelled"
    TIMEOUT = "timeout"
    BROKEN_STREAM = "broken_stream"
    GATEWAY_ERROR = "gateway_error"


class UsageSource(StrEnum):
    """Where the token counts came from: the API itself, our own count, or nowhere."""

    REPORTED = "reported"
    ESTIMATED = "estimated"
    NONE = "none"


class Deployment(StrEnum):
    PROPRIETARY = "proprietary"
    SELF_HOSTED = "self_hosted"


class TokenUsage(BaseModel):
    """Normalized token classes. Subset fields never exceed their parent total."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_tokens: Count = Field(0, description="Every prompt token, cached or not.")
    cache_read_input_tokens: Count = Field(0, description="Subset of input_tokens read from cache.")
    cache_creation_input_tokens: Count = Field(
        0, description="Subset of input_tokens written to cache (5m + 1h + unspecified TTL)."
    )
    cache_creation_5m_input_tokens: Count = Field(0, description="Part of cache writes with a 5-minute TTL.")
    cache_creation_1h_input_tokens: Count = Field(0, description="Part of cache writes with a 1-hour TTL.")
    input_audio_tokens: Count = Field(0, description="Subset of input_tokens that were audio.")
    input_image_tokens: Count = Field(0, description="Subset of input_tokens that were images.")
    output_tokens: Count = Field(0, description="Every generated token, reasoning included.")
    reasoning_output_tokens: Count = Field(0, description="Subset of output_tokens spent on reasoning.")
    output_audio_tokens: Count = Field(0, description="Subset of output_tokens that were audio.")
    output_image_tokens: Count = Field(0, description="Subset of output_tokens that were images.")

    @model_validator(mode="after")
    def _subsets_fit(self) -> TokenUsage:
        """Reject impossible counts here, so no consumer can double count a subset."""
        cache = self.cache_read_input_tokens + self.cache_creation_input_tokens
        problems = []
        if cache > self.input_tokens:
            problems.append(f"cache tokens ({cache}) exceed input_tokens ({self.input_tokens})")
        split = self.cache_creation_5m_input_tokens + self.cache_creation_1h_input_tokens
        if split > self.cache_creation_input_tokens:
            problems.append("cache_creation 5m+1h exceed cache_creation_input_tokens")
        if self.input_audio_tokens + self.input_image_tokens > self.input_tokens:
            problems.append("input audio+image tokens exceed input_tokens")
        out_parts = self.reasoning_output_tokens + self.output_audio_tokens + self.output_image_tokens
        if out_parts > self.output_tokens:
            problems.append(f"output subsets ({out_parts}) exceed output_tokens ({self.output_tokens})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Attribution(BaseModel):
    """Who to charge. Never carries the API key itself, only its id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    team: Label = "unassigned"
    project: Label = ""
    user: Label = ""
    api_key_id: Label = ""
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS)


class UsageEvent(BaseModel):
    """One upstream attempt, as seen by the gateway. ``event_id`` (UUIDv7) is the idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="UsageEvent v1")

    schema_version: Literal["1"] = SCHEMA_VERSION
    event_id: UUID = Field(description="UUIDv7 assigned by the gateway; dedup key into ClickHouse.")
    gateway_id: Label = Field("", description="Which gateway replica emitted the event.")
    started_at: AwareDatetime = Field(description="When the gateway received the request (UTC).")
    first_token_at: AwareDatetime | None = Field(None, description="First byte of a streamed answer.")
    ended_at: AwareDatetime = Field(description="When the last byte went to the client.")
    api: Label = Field(description="Wire API, e.g. openai.chat, anthropic.messages.")
    backend: Label = Field(description="Backend name from the gateway config.")
    provider: Label = Field(description="Price-book provider id, e.g. openai, anthropic, vllm.")
    deployment: Deployment
    model_requested: Label
    model_served: Label = Field("", description="Model the upstream says it served; empty if unknown.")
    stream: bool = False
    status: Status
    http_status: int = Field(ge=0, le=999)
    usage_source: UsageSource
    usage: TokenUsage = Field(default_factory=TokenUsage)
    backend_compute_seconds: float | None = Field(
        None, ge=0, description="GPU time the backend reported (e.g. Ollama eval_duration), if any."
    )
    attribution: Attribution = Field(default_factory=Attribution)
    # Optional since their introduction, so every v1 event written before still validates.
    usage_problem: Problem = Field(
        "", description="Why usage is missing, partial or estimated, as the gateway diagnosed it; '' when none.")
    upstream_error_type: Label = Field(
        "", description="The provider's own error type (e.g. overloaded_error, RESOURCE_EXHAUSTED, server_error), "
                        "from an error body or an error event inside a 200 stream; '' when none.")
    usage_flags: Flags = Field(
        "", description="Comma-separated UsageFlag codes for implausible usage (kept as reported); '' when none.")
    # Which provider account the request went to, as the backend config declares it (issue 19): what the
    # provider's own usage and cost reports group by. Ids only, never a credential; '' when not declared.
    credential_id: Label = Field(
        "", description="The backend's declared credential id (account.credential_id), never the key; '' if none.")
    upstream_project: Label = Field(
        "", description="OpenAI project or Anthropic workspace id of the credential (account.project_id / "
                        "workspace_id); '' if not declared.")
    service_tier: Label = Field(
        "", description="The service tier the request asked for (its body's service_tier); '' when none.")
