"""Errors in each API's own shape, so SDKs raise their usual typed exceptions.

Every builder takes ``(status, message, param=None)`` so the gateway's API table can hold any of
them; only OpenAI's shape has a place for ``param``.
"""

from __future__ import annotations

import orjson

_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("requests", "rate_limit_exceeded"),  # as OpenAI's own 429 (the SDKs raise RateLimitError on the status)
    502: ("api_error", "bad_gateway"),
    503: ("api_error", "service_unavailable"),
    504: ("api_error", "upstream_timeout"),
}

# Anthropic's errors page: one error type per HTTP status; other 4xx are invalid_request_error.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

# google.rpc.Code names with their documented HTTP mapping (Gemini troubleshooting guide).
_GOOGLE_STATUSES = {
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


def openai_error(status: int, message: str, param: str | None = None) -> bytes:
    """OpenAI's documented error body: {"error": {"message", "type", "param", "code"}}."""
    err_type, code = _OPENAI_TYPES.get(status, ("api_error", None))
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})


def anthropic_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (unlisted 5xx are ``api_error``)."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error(status: int, message: str, _param: str | None = None) -> bytes:
    """Anthropic's error body: {"type": "error", "error": {"type", "message"}}."""
    return orjson.dumps({"type": "error", "error": {"type": anthropic_type(status), "message": message}})


def google_status(status: int) -> str:
    """The google.rpc status name Gemini puts next to an HTTP code (unlisted 4xx/5xx: the closest class)."""
    return _GOOGLE_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def gemini_error(status: int, message: str, _param: str | None = None) -> bytes:
    """Gemini's (Google API) error body: {"error": {"code", "message", "status"}}."""
    return orjson.dumps({"error": {"code": status, "message": message, "status": google_status(status)}})


def ollama_error(_status: int, message: str, _param: str | None = None) -> bytes:
    """Ollama's error body: {"error": "<message>"} (the HTTP status carries the class)."""
    return orjson.dumps({"error": message})
