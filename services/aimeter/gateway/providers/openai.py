"""The OpenAI API unit: Chat Completions, legacy Completions, Embeddings and the Responses API.

Routes ``/v1/...``, the key as ``Authorization: Bearer``, upstream ``<base_url>`` + path (the base ends in
``/v1``), the error shape, ``GET /v1/models``, and usage extraction, whole and streamed. Chat Completions
and legacy Completions are also what vLLM, SGLang, TGI and llama.cpp speak (``openai_compatible``).

The rule that matters most: OpenAI's ``prompt_tokens`` (and the Responses API's ``input_tokens``)
already *include* cached tokens, so cached tokens are recorded as a subset and never added on top
(the most reported cost bug in peer projects). The same holds for ``cache_write_tokens``, which the
API reference (and genai-prices' own OpenAI extractor) lists inside the input token details.

OpenAI-compatible providers that report in their own fields (each from its API docs, cross-checked with
the usage extractors of genai-prices' provider list), read only where OpenAI's own field is absent:

* DeepSeek: ``prompt_cache_hit_tokens`` + ``prompt_cache_miss_tokens`` = ``prompt_tokens``; hits are
  cache reads. (Without this a cached DeepSeek prompt was priced as uncached input.)
* Moonshot (Kimi) and Anthropic's OpenAI-compatible endpoint: ``cached_tokens`` at the top of ``usage``.
* Databricks: ``cache_read_input_tokens`` and ``reasoning_tokens`` at the top of ``usage``.
* xAI: ``cached_prompt_text_tokens`` (older answers); Perplexity, xAI, Modal: ``reasoning_tokens`` at the top.
* Perplexity's Responses API: ``input_tokens_details.cache_read_input_tokens``.
* Groq's streams: the usage in the last chunk's ``x_groq`` object (``x_groq.usage``), not at the top.

Where reasoning tokens sit differs by provider: inside ``completion_tokens`` (OpenAI, DeepSeek, Databricks)
or beside it (xAI, Perplexity, whose ``total_tokens`` is prompt + completion + reasoning). That is read
from the numbers themselves, not from the provider's name: reasoning is added to the output when
``total_tokens`` says so, or when it exceeds ``completion_tokens`` (it cannot then be a subset).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.providers.base import ApiSpec, ModelList, Provider, never
from aimeter.gateway.usage import (
    NO_USAGE,
    Extracted,
    RunningCounts,
    checked,
    count,
    details,
    error_label,
    joined,
)

if TYPE_CHECKING:
    from aimeter.config import Backend

_Field = tuple[Mapping[str, Any] | None, str]


def first_count(*fields: _Field) -> int:
    """The first of ``(object, key)`` that is present (not absent, not null), read with ``count``; else 0."""
    for obj, key in fields:
        if obj and obj.get(key) is not None:
            return count(obj, key)
    return 0


def _reasoning_outside(usage: Mapping[str, Any], prompt: int, completion: int, reasoning: int) -> bool:
    """Whether reported reasoning tokens are NOT inside ``completion_tokens`` (xAI, Perplexity; see module doc)."""
    if reasoning > completion:
        return True
    total = usage.get("total_tokens")
    return (reasoning > 0 and isinstance(total, int) and not isinstance(total, bool)
            and total == prompt + completion + reasoning)


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    """``prompt_tokens``; DeepSeek's hit + miss when only those came (they add up to it by DeepSeek's docs)."""
    if usage.get("prompt_tokens") is None and (usage.get("prompt_cache_hit_tokens") is not None
                                              or usage.get("prompt_cache_miss_tokens") is not None):
        return count(usage, "prompt_cache_hit_tokens") + count(usage, "prompt_cache_miss_tokens")
    return count(usage, "prompt_tokens")


def openai_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """OpenAI Chat/Completions usage. ``prompt_tokens`` includes ``cached_tokens`` and ``cache_write_tokens``;
    provider-native fields (module doc) fill in where OpenAI's are absent."""
    prompt_details = details(usage, "prompt_tokens_details")
    completion_details = details(usage, "completion_tokens_details")
    prompt = _prompt_tokens(usage)
    completion = count(usage, "completion_tokens")
    reasoning = first_count((completion_details, "reasoning_tokens"), (usage, "reasoning_tokens"))
    outside = _reasoning_outside(usage, prompt, completion, reasoning)
    return TokenUsage(
        input_tokens=prompt,
        cache_read_input_tokens=first_count(
            (prompt_details, "cached_tokens"), (usage, "prompt_cache_hit_tokens"), (usage, "cached_tokens"),
            (usage, "cache_read_input_tokens"), (usage, "cached_prompt_text_tokens")),
        cache_creation_input_tokens=count(prompt_details, "cache_write_tokens"),
        input_audio_tokens=count(prompt_details, "audio_tokens"),
        input_image_tokens=count(prompt_details, "image_tokens"),
        output_tokens=completion + reasoning if outside else completion,
        reasoning_output_tokens=reasoning,
        output_audio_tokens=count(completion_details, "audio_tokens"),
    )


def responses_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """Responses API usage: ``input_tokens`` includes ``input_tokens_details.cached_tokens``.

    OpenAI's cache writes carry 30-minute / 12-hour TTLs (``cache_write_tokens_details``), which are
    not Anthropic's 5m / 1h classes, so they stay in ``cache_creation_input_tokens`` unsplit.
    """
    inputs = details(usage, "input_tokens_details")
    outputs = details(usage, "output_tokens_details")
    return TokenUsage(
        input_tokens=count(usage, "input_tokens"),
        cache_read_input_tokens=first_count((inputs, "cached_tokens"), (inputs, "cache_read_input_tokens")),
        cache_creation_input_tokens=count(inputs, "cache_write_tokens"),
        output_tokens=count(usage, "output_tokens"),
        reasoning_output_tokens=count(outputs, "reasoning_tokens"),
    )


def embeddings_usage(usage: Mapping[str, Any]) -> TokenUsage:
    """Embeddings usage is ``{prompt_tokens, total_tokens}``: all input, nothing generated."""
    return TokenUsage(input_tokens=count(usage, "prompt_tokens"))


def llamacpp_compute_seconds(body: Mapping[str, Any]) -> float | None:
    """llama.cpp's ``timings`` (prompt_ms + predicted_ms) is GPU time the self-hosted cost model can use."""
    timings = body.get("timings")
    if not isinstance(timings, Mapping):
        return None
    total_ms = 0.0
    for key in ("prompt_ms", "predicted_ms"):
        value = timings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e12:
            total_ms += float(value)
    return total_ms / 1000.0 if total_ms else None


def error_type_of(error: Any) -> str:
    """An OpenAI error object's ``code`` (e.g. rate_limit_exceeded), else its ``type`` (e.g. server_error)."""
    if not isinstance(error, Mapping):
        return "error" if error else ""
    return error_label(error.get("code")) or error_label(error.get("type")) or "error"


def describe_error(error: Any) -> str:
    """``type: message`` of an OpenAI error object, for the event's problem field."""
    if not isinstance(error, Mapping):
        return f"{error!s:.200}"
    return f"{error_type_of(error)}: {error.get('message') or 'no message'}"


def _extract(body: Any, mapper: Callable[[Mapping[str, Any]], TokenUsage], problem: str = "",
             error_type: str = "") -> Extracted:
    """Run ``mapper`` on ``body["usage"]``; bad data becomes ``UsageSource.NONE`` with the reason, never an error."""
    if not isinstance(body, Mapping):
        return Extracted(TokenUsage(), UsageSource.NONE, problem="response is not a JSON object")
    model = body.get("model")
    served = model if isinstance(model, str) else ""
    usage = body.get("usage")
    if body.get("error") and not error_type and body.get("object") != "response":
        error = body["error"]
        error_type, problem = error_type_of(error), joined(problem, f"error body: {describe_error(error)}")
    if not isinstance(usage, Mapping):
        return Extracted(NO_USAGE.usage, NO_USAGE.source, served, problem=problem or NO_USAGE.problem,
                         error_type=error_type)
    return checked(mapper, usage, served, UsageSource.REPORTED, problem, compute_seconds=llamacpp_compute_seconds(body),
                   error_type=error_type)


def from_openai_body(body: Any) -> Extracted:
    """Usage from an OpenAI-shaped chat completion (or final stream chunk); flags bad data instead of raising."""
    return _extract(body, openai_usage)


def from_completions_body(body: Any) -> Extracted:
    """Legacy ``/v1/completions``: the same ``usage`` object as Chat Completions (``CompletionUsage``)."""
    return _extract(body, openai_usage)


def from_embeddings_body(body: Any) -> Extracted:
    """``/v1/embeddings``: input tokens only; embeddings generate no output tokens."""
    return _extract(body, embeddings_usage)


def _response_problem(body: Mapping[str, Any]) -> tuple[str, str]:
    """Why a Response did not complete (``incomplete_details`` / ``error``), and the error's code if it failed."""
    status = body.get("status")
    if status == "incomplete":
        incomplete = details(body, "incomplete_details") or {}
        return f"response incomplete: {incomplete.get('reason') or 'no reason given'}", ""
    if status == "failed":
        error = details(body, "error") or {}
        return f"response failed: {describe_error(error)}", error_type_of(error)
    return "", ""


def from_responses_body(body: Any) -> Extracted:
    """A Responses API ``response`` object (the whole answer, or the one inside a terminal stream event)."""
    problem, error_type = _response_problem(body) if isinstance(body, Mapping) else ("", "")
    return _extract(body, responses_usage, problem, error_type)


_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_ERROR_KEY = b'"error"'  # an unescaped quote delimits JSON strings: a key, or a string that is exactly "error"
_RUNNING_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class OpenAIChatStream:
    """Chat Completions stream: usage arrives in the last chunk when ``include_usage`` is on.

    Some OpenAI-compatible servers repeat running usage on every chunk (vLLM's ``continuous_usage_stats``):
    the last one wins, and one that goes down is flagged. A ``data: {"error": …}`` event (OpenAI's way of
    failing a stream that has started) is kept with its type.
    """

    def __init__(self) -> None:
        self.usage_body: dict[str, Any] | None = None
        self.model = ""
        self.error = ""
        self.error_type = ""
        self.running = RunningCounts()

    def interesting(self, payload: bytes) -> bool:
        return not self.model or _USAGE_OBJECT.search(payload) is not None or _ERROR_KEY in payload

    def on_event(self, event: Any, event_type: str) -> None:
        if not isinstance(event, dict):
            return
        if not self.model and isinstance(event.get("model"), str):
            self.model = event["model"]
        usage = event.get("usage")
        if not isinstance(usage, dict):  # Groq streams put the usage in its own `x_groq` object of the last chunk
            groq = event.get("x_groq")
            usage = groq.get("usage") if isinstance(groq, dict) else None
            event = {**event, "usage": usage} if isinstance(usage, dict) else event
        if isinstance(usage, dict):
            self.usage_body = event
            self.running.see(usage, _RUNNING_KEYS)
        if event.get("error"):
            self.error_type = error_type_of(event["error"])
            self.error = f"stream error event: {describe_error(event['error'])}"

    def text_of(self, event: Any) -> str:
        return _choice_texts(event, self._choice_text)

    @staticmethod
    def _choice_text(choice: Mapping[str, Any]) -> Any:
        delta = choice.get("delta")
        return delta.get("content") if isinstance(delta, Mapping) else None

    def result(self) -> Extracted:
        if self.usage_body is None:
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, error_type=self.error_type,
                             problem=self.error or "stream carried no usage", flags=self.running.flags)
        got = from_openai_body(self.usage_body)
        return replace(got, problem=joined(got.problem, self.error), error_type=got.error_type or self.error_type,
                       flags=self.running.flags)


class OpenAICompletionsStream(OpenAIChatStream):
    """Legacy Completions stream: chat's framing and final usage chunk, text in ``choices[].text``."""

    @staticmethod
    def _choice_text(choice: Mapping[str, Any]) -> Any:
        return choice.get("text")


def _choice_texts(event: Any, pick: Callable[[Mapping[str, Any]], Any]) -> str:
    """Concatenated text of every choice in a chunk, read with ``pick``; '' for anything malformed."""
    choices = event.get("choices") if isinstance(event, dict) else None
    parts = []
    for choice in choices if isinstance(choices, list) else []:
        text = pick(choice) if isinstance(choice, Mapping) else None
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


_RESPONSE_EVENT = re.compile(
    rb'"type"\s*:\s*"(?:response\.(?:created|in_progress|completed|incomplete|failed)|error)"'
)
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesStream:
    """Responses API stream (``event: response.*``): usage arrives in the terminal event's ``response``.

    Per OpenAI's streaming reference the stream ends with ``response.completed``, ``response.incomplete``
    or ``response.failed`` (each carrying the final Response and its usage), with no ``[DONE]``;
    ``complete`` says whether one arrived. ``response.failed`` and the ``error`` event
    (``{"type": "error", "code", "message", "param"}``) are upstream errors: their code is kept.
    """

    def __init__(self) -> None:
        self.model = ""
        self.final: Mapping[str, Any] | None = None
        self.complete = False
        self.error = ""
        self.error_type = ""

    def interesting(self, payload: bytes) -> bool:
        return _RESPONSE_EVENT.search(payload) is not None

    def on_event(self, event: Any, event_type: str) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        kind = kind if isinstance(kind, str) else event_type
        response = event.get("response")
        if isinstance(response, Mapping):
            if isinstance(response.get("model"), str):
                self.model = response["model"]
            if kind in _TERMINAL:
                self.final, self.complete = response, True
        if kind == "error":
            # The documented event has code/message at its top; some servers nest them in an error object.
            error = event.get("error") if isinstance(event.get("error"), Mapping) else event
            self.error_type = error_type_of(error)
            self.error = f"stream error event: {describe_error(error)}"

    def text_of(self, event: Any) -> str:
        if isinstance(event, dict) and event.get("type") == "response.output_text.delta":
            delta = event.get("delta")
            return delta if isinstance(delta, str) else ""
        return ""

    def result(self) -> Extracted:
        if self.final is None:
            problem = self.error or "stream ended before response.completed"
            return Extracted(TokenUsage(), UsageSource.NONE, self.model, problem=problem, error_type=self.error_type)
        got = from_responses_body(self.final)
        if self.error:
            return replace(got, problem=joined(got.problem, self.error), error_type=got.error_type or self.error_type)
        return got


# --- errors: OpenAI's documented error body, so the SDKs raise their usual typed exceptions ---

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),  # as OpenAI's own 429 (the SDKs raise RateLimitError on the status)
    502: ("api_error", "bad_gateway"),
    503: ("api_error", "service_unavailable"),
    504: ("api_error", "upstream_timeout"),
}


def openai_error(status: int, message: str, param: str | None = None) -> bytes:
    """OpenAI's documented error body: {"error": {"message", "type", "param", "code"}}."""
    err_type, code = _ERROR_TYPES.get(status, ("api_error", None))
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})


# --- model list: GET /v1/models in OpenAI's list shape (the openai SDK's client.models.list()) ---

def render_models(models: list[tuple[str, Backend]]) -> bytes:
    """OpenAI's ``list`` of ``model`` objects; ``created`` is unknown to the gateway, so 0."""
    return orjson.dumps({"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": backend.provider} for name, backend in models]})


# --- routes and upstream ---

OPENAI_LIKE = frozenset({"openai", "openai_compatible"})
SPEAKS_CHAT = OPENAI_LIKE | {"azure_openai"}  # Azure serves the same shapes (its unit adds the routes)
OPENAI_CHAT = ApiSpec("openai.chat", SPEAKS_CHAT, from_openai_body, OpenAIChatStream, openai_error,
                      "/chat/completions", inject_usage=True)
OPENAI_COMPLETIONS = ApiSpec("openai.completions", SPEAKS_CHAT, from_completions_body, OpenAICompletionsStream,
                             openai_error, "/completions", inject_usage=True)
OPENAI_EMBEDDINGS = ApiSpec("openai.embeddings", SPEAKS_CHAT, from_embeddings_body, None, openai_error,
                            "/embeddings", is_stream=never)
OPENAI_RESPONSES = ApiSpec("openai.responses", OPENAI_LIKE, from_responses_body, ResponsesStream, openai_error,
                           "/responses")

PROVIDER = Provider(
    "openai", ("openai", "openai_compatible"),
    routes={"/v1/chat/completions": OPENAI_CHAT, "/v1/completions": OPENAI_COMPLETIONS,
            "/v1/embeddings": OPENAI_EMBEDDINGS, "/v1/responses": OPENAI_RESPONSES},
    key_header="authorization",
    credential=("authorization", "Bearer "),
    model_lists=(ModelList("/v1/models", SPEAKS_CHAT, render_models, openai_error),),
)
