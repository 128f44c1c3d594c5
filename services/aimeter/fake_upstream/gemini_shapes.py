"""Pure builders of Gemini ``generateContent`` / ``streamGenerateContent`` objects for the fake upstream.

Shapes follow the Gemini API reference (GenerateContentResponse, UsageMetadata, Google error
object). Usage is in Gemini's OWN semantics: ``promptTokenCount`` includes
``cachedContentTokenCount``; ``candidatesTokenCount`` EXCLUDES ``thoughtsTokenCount``; and
``totalTokenCount`` is prompt + candidates + thoughts (+ tool-use prompt, never sent here).

Streams: with ``?alt=sse`` each chunk is one ``data:`` event; without it the answer is one JSON array
of the same chunks, written as it is generated. Every chunk carries ``usageMetadata`` as a running
total (prompt and thoughts in full from the first chunk, candidates growing), as real captures show,
so a reader must keep the last one; the last chunk has the ``finishReason``. No ``[DONE]``.
"""

from __future__ import annotations

import orjson

from aimeter.fake_upstream.common import JsonDict, StreamParts, Usage, content_text, partial, text_pieces
from aimeter.fake_upstream.plan import Plan

FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS"}

# HTTP status -> google.rpc.Code name, from the Gemini API troubleshooting guide and google.rpc's code.proto
# mapping. The fake keeps its own copy on purpose: a wrong mapping in the gateway must not be copied here.
RPC_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# status -> message, as the Gemini troubleshooting guide words them; `{model}` is filled in.
_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "Method doesn't allow unregistered callers (callers without established identity).",
    404: "models/{model} is not found for API version v1beta, or is not supported for generateContent.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


def usage_metadata(usage: Usage) -> JsonDict:
    """Gemini's `usageMetadata` (cache writes have no field here: explicit caches are made elsewhere)."""
    meta: JsonDict = {
        "promptTokenCount": usage.prompt,
        "candidatesTokenCount": usage.visible,
        "totalTokenCount": usage.prompt + usage.completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt}],
    }
    if usage.cached:
        meta["cachedContentTokenCount"] = usage.cached
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.cached}]
    if usage.reasoning:
        meta["thoughtsTokenCount"] = usage.reasoning
    return meta


def response(plan: Plan, response_id: str, text: str, usage: Usage, finish: str | None) -> JsonDict:
    """One GenerateContentResponse with a single candidate."""
    candidate: JsonDict = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage_metadata(usage), "modelVersion": plan.model,
            "responseId": response_id}


def whole(plan: Plan, response_id: str) -> JsonDict:
    return response(plan, response_id, content_text(plan.words), plan.usage, FINISH_REASONS[plan.finish_reason])


def _chunks(plan: Plan, response_id: str) -> list[JsonDict]:
    pieces = text_pieces(plan.words, plan.chunks)
    last = len(pieces) - 1
    return [
        response(plan, response_id, piece, partial(plan.usage, i + 1, len(pieces)),
                 FINISH_REASONS[plan.finish_reason] if i == last else None)
        for i, piece in enumerate(pieces)
    ]


def error_object(status: int, message: str) -> JsonDict:
    """Google's error shape: `{"error": {code, message, status}}`."""
    rpc = RPC_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": status, "message": message, "status": rpc}}


def simulated_error(status: int, model: str) -> JsonDict:
    message = _MESSAGES.get(status, f"Simulated HTTP {status} error (fake upstream).").replace("{model}", model)
    return error_object(status, message)


_OVERLOADED = error_object(503, _MESSAGES[503])


def stream_sse(plan: Plan, response_id: str) -> StreamParts:
    """`?alt=sse`: one `data:` event per chunk, CRLF-framed as Google's servers send it."""
    frames = [b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in _chunks(plan, response_id)]
    return StreamParts(b"", frames, b"", b"data: " + orjson.dumps(_OVERLOADED) + b"\r\n\r\n")


def stream_array(plan: Plan, response_id: str) -> StreamParts:
    """No `alt`: a JSON array of the chunks, opened at once and closed after the last."""
    frames = [(b"," if i else b"") + b"\r\n" + orjson.dumps(c) for i, c in enumerate(_chunks(plan, response_id))]
    return StreamParts(b"[", frames, b"\r\n]", b",\r\n" + orjson.dumps(_OVERLOADED) + b"\r\n]",
                       b"[\r\n" + orjson.dumps(_OVERLOADED) + b"\r\n]")
