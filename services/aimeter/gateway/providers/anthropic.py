"""The Anthropic Messages unit (``/v1/messages``): key in ``x-api-key``, upstream ``<base_url>/v1/messages``
with ``anthropic-version``, the error shape, ``GET /v1/models`` in Anthropic's shape, and usage, whole and SSE.

Anthropic's ``input_tokens`` EXCLUDES cached tokens. Per Anthropic's docs, "total input tokens in a
request is the summation of input_tokens, cache_creation_input_tokens, and cache_read_input_tokens",
so the normalized ``input_tokens`` is that sum and both cache counts are subsets of it.

Cache writes: when the ``cache_creation`` object (``ephemeral_5m_input_tokens`` /
``ephemeral_1h_input_tokens``) is present it gives the TTL split; when it is absent (older API
versions, some proxies) the 5m / 1h classes stay 0 and the whole ``cache_creation_input_tokens``
count is an unspecified-TTL write, which genai-prices prices at the model's default (5-minute)
cache-write rate. ``output_tokens_details.thinking_tokens`` is the reasoning subset of output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.providers.base import ApiSpec, ModelList, Provider
from aimeter.gateway.usage import NO_USAGE, Extracted, RunningCounts, checked, count, details, error_label, joined

if TYPE_CHECKING:
    from aimeter.config import Backend


def _cache_writes(usage: Mapping[str, Any]) -> tuple[int, int, int]:
    """(all cache writes, 5-minute writes, 1-hour writes); the total falls back to the split's sum."""
    split = details(usage, "cache_creation")
    five_min = count(split, "ephemeral_5m_input_tokens")
    one_hour = count(split, "ephemeral_1h_input_tokens")
    if usage.get("cache_creation_input_tokens") is None:
        return five_min + one_hour, five_min, one_hour
    return count(usage, "cache_creation_input_tokens"), five_min, one_hour


def anthropic_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """Normalize an Anthropic ``usage`` object: input = uncached + cache writes + cache reads."""
    uncached = count(usage, "input_tokens")
    read = count(usage, "cache_read_input_tokens")
    written, five_min, one_hour = _cache_writes(usage)
    return TokenUsage(
        input_tokens=uncached + written + read,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=written,
        cache_creation_5m_input_tokens=five_min,
        cache_creation_1h_input_tokens=one_hour,
        output_tokens=count(usage, "output_tokens"),
        reasoning_output_tokens=count(details(usage, "output_tokens_details"), "thinking_tokens"),
    )


def _checked(usage: Mapping[str, Any], served: str, source: UsageSource, problem: str = "", *, error: str = "",
             flags: tuple[str, ...] = ()) -> Extracted:
    return checked(anthropic_usage, usage, served, source, problem, error_type=error, flags=flags)


def from_anthropic_body(body: Any) -> Extracted:
    """Usage of a whole Message object (``{"type": "message", "model", "usage": {…}}``); never raises."""
    if not isinstance(body, Mapping):
        return Extracted(TokenUsage(), UsageSource.NONE, problem="response is not a JSON object")
    served = model if isinstance(model := body.get("model"), str) else ""
    if body.get("type") == "error":
        return Extracted(TokenUsage(), UsageSource.NONE, served, problem=f"error body: {describe_error(body)}",
                         error_type=error_type_of(body))
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return Extracted(NO_USAGE.usage, NO_USAGE.source, served, problem=NO_USAGE.problem)
    return _checked(usage, served, UsageSource.REPORTED)


def describe_error(event: Mapping[str, Any]) -> str:
    """``type: message`` of an Anthropic error object, for the event's problem field."""
    error = event.get("error")
    if not isinstance(error, Mapping):
        return "no error object"
    return f"{error.get('type') or 'unknown'}: {error.get('message') or 'no message'}"


def error_type_of(event: Mapping[str, Any]) -> str:
    """Anthropic's error ``type`` (overloaded_error, api_error, …); 'error' when the object has none."""
    error = event.get("error")
    return (error_label(error.get("type")) if isinstance(error, Mapping) else "") or "error"


# Only message_start / message_delta / message_stop / error matter; ping and content events are skipped.
_USAGE_EVENT = re.compile(rb'"type"\s*:\s*"(?:message_(?:start|delta|stop)|error)"')
_TEXT_DELTAS = {"text_delta": "text", "input_json_delta": "partial_json"}
_RUNNING_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class AnthropicStream:
    """Anthropic Messages SSE: usage in ``message_start``, then cumulative updates in ``message_delta``.

    Per the streaming docs (and the SDKs' accumulators), ``message_delta`` usage counts are
    cumulative totals: every field takes its latest non-null value, nothing is added. The
    ``cache_creation`` TTL split only appears in ``message_start``. ``complete`` means
    ``message_stop`` arrived; an in-stream ``error`` event (e.g. ``overloaded_error`` inside a 200
    stream) is kept as the problem, with its type. A cumulative count that goes down is flagged.
    """

    def __init__(self) -> None:
        self.model = ""
        self.usage: dict[str, Any] = {}
        self.saw_start = False
        self.saw_delta = False
        self.complete = False
        self.error = ""
        self.error_type = ""
        self.running = RunningCounts()

    def interesting(self, payload: bytes) -> bool:
        return _USAGE_EVENT.search(payload) is not None

    def on_event(self, event: Any, event_type: str) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type") or event_type
        if kind == "message_start":
            self._start(event.get("message"))
        elif kind == "message_delta":
            self.saw_delta = self._merge(event.get("usage")) or self.saw_delta
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            self.error = f"stream error event: {describe_error(event)}"
            self.error_type = error_type_of(event)

    def _start(self, message: Any) -> None:
        if not isinstance(message, Mapping):
            return
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        self.saw_start = self._merge(message.get("usage")) or self.saw_start

    def _merge(self, usage: Any) -> bool:
        """Latest non-null value of every usage field wins (counts are cumulative, never summed)."""
        if not isinstance(usage, Mapping):
            return False
        self.running.see(usage, _RUNNING_KEYS)
        self.usage.update((k, v) for k, v in usage.items() if v is not None)
        return True

    def text_of(self, event: Any) -> str:
        """Generated text of a ``content_block_delta``: text and tool-input JSON (both are output tokens)."""
        delta = event.get("delta") if isinstance(event, dict) and event.get("type") == "content_block_delta" else None
        if not isinstance(delta, Mapping):
            return ""
        kind = delta.get("type")
        field = _TEXT_DELTAS.get(kind) if isinstance(kind, str) else None
        text = delta.get(field) if field else None
        return text if isinstance(text, str) else ""

    def result(self) -> Extracted:
        flags = self.running.flags
        if not (self.saw_start or self.saw_delta):
            problem = self.error or "stream carried no usage"
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, problem=problem, error_type=self.error_type,
                             flags=flags)
        if self.saw_delta:
            return _checked(self.usage, self.model, UsageSource.REPORTED, self.error, error=self.error_type,
                            flags=flags)
        # Cut before message_delta: input is exact (message_start), output only the provisional count.
        cut = "stream ended before message_delta; output_tokens is message_start's provisional count"
        return _checked(self.usage, self.model, UsageSource.ESTIMATED, joined(self.error, cut), error=self.error_type,
                        flags=flags)


# --- errors: Anthropic's errors page, one error type per HTTP status; other 4xx are invalid_request_error ---

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (unlisted 5xx are ``api_error``)."""
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error(status: int, message: str, _param: str | None = None) -> bytes:
    """Anthropic's error body: {"type": "error", "error": {"type", "message"}}."""
    return orjson.dumps({"type": "error", "error": {"type": anthropic_type(status), "message": message}})


# --- model list: GET /v1/models as the anthropic SDK's client.models.list() reads it ---

def render_models(models: list[tuple[str, Backend]]) -> bytes:
    """One page holding every model (``has_more`` false); ``created_at`` is unknown to the gateway: the epoch."""
    data = [{"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
            for name, _ in models]
    return orjson.dumps({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None})


def claims_models_request(headers: Mapping[str, str]) -> bool:
    """OpenAI's and Anthropic's SDKs both call ``GET /v1/models``: Anthropic's always sends ``anthropic-version``
    (and its key in ``x-api-key``, where OpenAI's sends ``Authorization: Bearer``)."""
    return "anthropic-version" in headers or ("x-api-key" in headers and "authorization" not in headers)


# --- route and upstream ---

ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC = frozenset({"anthropic"})
ANTHROPIC_MESSAGES = ApiSpec("anthropic.messages", ANTHROPIC, from_anthropic_body, AnthropicStream, anthropic_error,
                             "/v1/messages")
PROVIDER = Provider(
    "anthropic", ("anthropic",),
    routes={"/v1/messages": ANTHROPIC_MESSAGES},
    key_header="x-api-key",
    credential=("x-api-key", ""),
    pass_through=("anthropic-version", "anthropic-beta"),  # they change the upstream's behaviour, not who pays
    default_headers={"anthropic-version": ANTHROPIC_VERSION},
    model_lists=(ModelList("/v1/models", ANTHROPIC, render_models, anthropic_error,
                           claims=claims_models_request),),
)
