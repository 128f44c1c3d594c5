"""The Gemini unit: ``/{v1,v1beta}/models/<model>:{generateContent,streamGenerateContent}``, key in
``x-goog-api-key`` or ``?key=``, upstream ``<base_url>/<version>/models/<model>:<method>`` (``?alt=sse`` kept),
Google's error shape, ``models.list`` (``GET /v1beta/models``, or ``/v1/models`` with Google's headers),
and usage (``usageMetadata``), whole and streamed.

What the API reference says, and how it maps (genai-prices' Gemini extractor agrees):

* ``promptTokenCount`` is "the total number of tokens in the prompt … When cached_content is set, this
  also includes the number of tokens in the cached content", so ``cachedContentTokenCount`` is a
  subset of it (unlike Anthropic).
* ``totalTokenCount`` is "the sum of prompt_token_count, candidates_token_count,
  tool_use_prompt_token_count, and thoughts_token_count": tool-use prompt tokens are *not* inside
  ``promptTokenCount`` and thoughts are *not* inside ``candidatesTokenCount``. So
  input = prompt + toolUsePrompt and output = candidates + thoughts, with thoughts the reasoning subset.
* Audio / image come from the ``modality`` breakdowns (``promptTokensDetails`` and
  ``toolUsePromptTokensDetails`` for input, ``candidatesTokensDetails`` for output).

Streams repeat ``usageMetadata`` on every chunk as a running total, so the last one wins; adding them
would multiply the prompt. Without ``alt=sse`` Gemini streams one JSON array of responses, which
``from_gemini_body`` also accepts once the whole array has arrived.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.providers.base import ApiSpec, Match, ModelList, Provider, query_value
from aimeter.gateway.usage import NO_USAGE, Extracted, RunningCounts, checked, count, error_label, joined

if TYPE_CHECKING:
    from aimeter.config import Backend


def _modality(usage: Mapping[str, Any], key: str, modality: str) -> int:
    """Tokens of one modality in a ``[{modality, tokenCount}]`` breakdown; absent or malformed lists count 0."""
    entries = usage.get(key)
    if not isinstance(entries, list):
        return 0
    return sum(count(e, "tokenCount") for e in entries if isinstance(e, Mapping) and e.get("modality") == modality)


def _inputs(usage: Mapping[str, Any], modality: str) -> int:
    return _modality(usage, "promptTokensDetails", modality) + _modality(usage, "toolUsePromptTokensDetails", modality)


def gemini_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """Normalize ``usageMetadata``: input = prompt + tool-use prompt, output = candidates + thoughts."""
    thoughts = count(usage, "thoughtsTokenCount")
    return TokenUsage(
        input_tokens=count(usage, "promptTokenCount") + count(usage, "toolUsePromptTokenCount"),
        cache_read_input_tokens=count(usage, "cachedContentTokenCount"),
        input_audio_tokens=_inputs(usage, "AUDIO"),
        input_image_tokens=_inputs(usage, "IMAGE"),
        output_tokens=count(usage, "candidatesTokenCount") + thoughts,
        reasoning_output_tokens=thoughts,
        output_audio_tokens=_modality(usage, "candidatesTokensDetails", "AUDIO"),
        output_image_tokens=_modality(usage, "candidatesTokensDetails", "IMAGE"),
    )


def _served(body: Mapping[str, Any]) -> str:
    """``modelVersion`` names the served model (sometimes as ``models/<id>``; we keep the id)."""
    version = body.get("modelVersion")
    return version.removeprefix("models/") if isinstance(version, str) else ""


def _checked(usage: Mapping[str, Any], served: str, source: UsageSource, problem: str = "", *, error: str = "",
             flags: tuple[str, ...] = ()) -> Extracted:
    return checked(gemini_usage, usage, served, source, problem, error_type=error, flags=flags)


def error_text(body: Mapping[str, Any]) -> str:
    """``status: message`` of a Google error object (``{"error": {code, message, status}}``)."""
    error = body.get("error")
    if not isinstance(error, Mapping):
        return "error"
    return f"{error.get('status') or error.get('code') or 'error'}: {error.get('message') or 'no message'}"


def error_type_of(body: Mapping[str, Any]) -> str:
    """The google.rpc status of an error object (UNAVAILABLE, RESOURCE_EXHAUSTED, …), else its code."""
    error = body.get("error")
    if not isinstance(error, Mapping):
        return "error"
    return error_label(error.get("status")) or error_label(error.get("code")) or "error"


def from_gemini_body(body: Any) -> Extracted:
    """A GenerateContentResponse, or the JSON-array form of a non-SSE stream (its last usage wins)."""
    if isinstance(body, list):
        return _from_array(body)
    if not isinstance(body, Mapping):
        return Extracted(TokenUsage(), UsageSource.NONE, problem="response is not a JSON object")
    served = _served(body)
    if "error" in body:
        return Extracted(TokenUsage(), UsageSource.NONE, served, problem=f"error body: {error_text(body)}",
                         error_type=error_type_of(body))
    usage = body.get("usageMetadata")
    if not isinstance(usage, Mapping):
        return Extracted(NO_USAGE.usage, NO_USAGE.source, served, problem=NO_USAGE.problem)
    return _checked(usage, served, UsageSource.REPORTED)


def _from_array(chunks: list[Any]) -> Extracted:
    """The whole JSON array of a stream without ``alt=sse``: last usage, plus any error element it ended with."""
    objects = [c for c in chunks if isinstance(c, Mapping)]
    errors = [f"stream error: {error_text(c)}" for c in objects if "error" in c]
    error = next((error_type_of(c) for c in reversed(objects) if "error" in c), "")
    with_usage = [c for c in objects if isinstance(c.get("usageMetadata"), Mapping)]
    running = RunningCounts()
    for chunk in with_usage:
        running.see(chunk["usageMetadata"], _RUNNING_KEYS)
    if not with_usage:
        return Extracted(NO_USAGE.usage, NO_USAGE.source, problem=joined(*errors) or NO_USAGE.problem, error_type=error)
    last = with_usage[-1]
    return _checked(last["usageMetadata"], _served(last), UsageSource.REPORTED, joined(*errors), error=error,
                    flags=running.flags)


def _candidates(event: Any) -> list[Mapping[str, Any]]:
    candidates = event.get("candidates") if isinstance(event, Mapping) else None
    return [c for c in candidates if isinstance(c, Mapping)] if isinstance(candidates, list) else []


_MARKERS = (b'"usageMetadata"', b'"finishReason"', b'"blockReason"', b'"error"')
_RUNNING_KEYS = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount")


class GeminiStream:
    """``streamGenerateContent?alt=sse``: each ``data:`` is a GenerateContentResponse with running usage.

    ``complete`` means a candidate carried a ``finishReason`` (or the prompt was blocked, which Gemini
    answers with ``promptFeedback.blockReason`` and no candidates); Gemini sends no ``[DONE]``.
    An error chunk (``{"error": {code, message, status}}`` inside the 200 stream) is kept with its status;
    a running count that goes down is flagged.
    """

    def __init__(self) -> None:
        self.model = ""
        self.usage: Mapping[str, Any] | None = None
        self.complete = False
        self.problem = ""
        self.error_type = ""
        self.running = RunningCounts()

    def interesting(self, payload: bytes) -> bool:
        return not self.model or any(marker in payload for marker in _MARKERS)

    def on_event(self, event: Any, event_type: str) -> None:
        if not isinstance(event, dict):
            return
        self.model = _served(event) or self.model
        if "error" in event:
            self.problem = f"stream error: {error_text(event)}"
            self.error_type = error_type_of(event)
        if isinstance(event.get("usageMetadata"), Mapping):
            self.usage = event["usageMetadata"]
            self.running.see(self.usage, _RUNNING_KEYS)
        if any(c.get("finishReason") for c in _candidates(event)):
            self.complete = True
        feedback = event.get("promptFeedback")
        if isinstance(feedback, Mapping) and feedback.get("blockReason"):
            self.complete = True
            self.problem = f"prompt blocked: {feedback['blockReason']}"

    def text_of(self, event: Any) -> str:
        """Text parts of every candidate; ``thought: true`` parts are summaries, not the billed thoughts."""
        texts = []
        for candidate in _candidates(event):
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, Mapping) else None
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, Mapping) and part.get("thought") is not True and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        return "".join(texts)

    def result(self) -> Extracted:
        error, flags = self.error_type, self.running.flags
        if self.usage is None:
            problem = self.problem or "stream carried no usage"
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, problem=problem, error_type=error, flags=flags)
        if self.complete:
            return _checked(self.usage, self.model, UsageSource.REPORTED, self.problem, error=error, flags=flags)
        cut = "stream ended before a finishReason; usage is the last chunk's running count"
        return _checked(self.usage, self.model, UsageSource.ESTIMATED, joined(self.problem, cut), error=error,
                        flags=flags)


# --- errors: google.rpc.Code names with their documented HTTP mapping (Gemini troubleshooting guide) ---

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def google_status(status: int) -> str:
    """The google.rpc status name Gemini puts next to an HTTP code (unlisted 4xx/5xx: the closest class)."""
    return _STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def gemini_error(status: int, message: str, _param: str | None = None) -> bytes:
    """Gemini's (Google API) error body: {"error": {"code", "message", "status"}}."""
    return orjson.dumps({"error": {"code": status, "message": message, "status": google_status(status)}})


# --- model list: models.list, one page, no nextPageToken ---

def render_models(models: list[tuple[str, Backend]]) -> bytes:
    return orjson.dumps({"models": [
        {"name": f"models/{name}", "displayName": name,
         "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]} for name, _ in models]})


def claims_models_request(headers: Mapping[str, str]) -> bool:
    """google-genai calls ``GET /v1/models`` too (OpenAI's path): it always sends ``x-goog-api-client``."""
    return "x-goog-api-client" in headers or "x-goog-api-key" in headers


# --- route and upstream ---

def gemini_streams(_request: dict[str, Any], method: str) -> bool:
    """Gemini streams by method name, not by a body field."""
    return method == "streamGenerateContent"


def target(base: str, match: Match, upstream_model: str, query: str) -> str:
    alt = "?alt=sse" if query_value(query, "alt") == "sse" else ""
    return f"{base}/{match.version or 'v1beta'}/models/{quote(upstream_model, safe='')}:{match.method}{alt}"


GEMINI_KINDS = frozenset({"gemini"})
GEMINI = ApiSpec("gemini.generate_content", GEMINI_KINDS, from_gemini_body, GeminiStream, gemini_error, "",
                 is_stream=gemini_streams, model_in_path=True, key_in_query=True)
PROVIDER = Provider(
    "gemini", ("gemini",),
    routes={},
    patterns=((re.compile(r"/(?P<version>v1beta|v1)/models/(?P<model>[A-Za-z0-9._-]{1,128})"
                          r":(?P<method>generateContent|streamGenerateContent)"), GEMINI),),
    key_header="x-goog-api-key",
    credential=("x-goog-api-key", ""),
    target=target,
    model_lists=(ModelList("/v1beta/models", GEMINI_KINDS, render_models, gemini_error, key_in_query=True),
                 ModelList("/v1/models", GEMINI_KINDS, render_models, gemini_error, key_in_query=True,
                           claims=claims_models_request)),
)
