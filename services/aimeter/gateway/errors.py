"""Errors in each API's own shape, so SDKs raise their usual typed exceptions."""

from __future__ import annotations

import orjson

_OPENAI_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    502: ("api_error", "bad_gateway"),
    503: ("api_error", "service_unavailable"),
    504: ("api_error", "upstream_timeout"),
}


def openai_error(status: int, message: str, param: str | None = None) -> bytes:
    """OpenAI's documented error body: {"error": {"message", "type", "param", "code"}}."""
    err_type, code = _OPENAI_TYPES.get(status, ("api_error", None))
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": param, "code": code}})
