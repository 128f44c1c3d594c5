"""The fake's non-OpenAI endpoints: Anthropic Messages, Gemini generateContent, Ollama chat / generate.

Each is an ``Api`` row: the request reader from ``bodies``, the shapes from its ``*_shapes`` module,
and errors in that API's own shape (Anthropic's typed error, Google's status error, Ollama's string).
"""

from __future__ import annotations

from datetime import UTC, datetime

from aimeter.fake_upstream import anthropic_shapes as anthropic
from aimeter.fake_upstream import gemini_shapes as gemini
from aimeter.fake_upstream import ollama_shapes as ollama
from aimeter.fake_upstream.bodies import (
    RequestError,
    read_anthropic,
    read_gemini,
    read_ollama_chat,
    read_ollama_generate,
)
from aimeter.fake_upstream.common import JsonDict, StreamParts
from aimeter.fake_upstream.wire import JSON_TYPE, NDJSON_TYPE, SSE_TYPE, Answer, Api, Handler, handler


def _anthropic_ids(answer: Answer) -> anthropic.Ids:
    return anthropic.Ids(f"msg_01{answer.token}", f"req_{answer.token}")


def anthropic_bad_request(err: RequestError, request_id: str) -> JsonDict:
    return anthropic.error_object(400, err.message, request_id)


ANTHROPIC = Api(
    read_anthropic,
    anthropic_bad_request,
    anthropic.simulated_error,
    lambda answer: anthropic.whole(_anthropic_ids(answer), answer.plan),
    lambda answer: anthropic.stream(_anthropic_ids(answer), answer.plan),
    request_id_header="request-id",
)


def gemini_bad_request(err: RequestError, _request_id: str) -> JsonDict:
    return gemini.error_object(400, err.message)


def gemini_error(status: int, model: str, _request_id: str) -> JsonDict:
    return gemini.simulated_error(status, model)


def _sse(answer: Answer) -> bool:
    return answer.call.query.get("alt") == "sse"


def gemini_stream(answer: Answer) -> StreamParts:
    """`?alt=sse` gives server-sent events; without it Gemini streams one JSON array."""
    build = gemini.stream_sse if _sse(answer) else gemini.stream_array
    return build(answer.plan, f"fAk3{answer.token}")


GEMINI = Api(
    read_gemini,
    gemini_bad_request,
    gemini_error,
    lambda answer: gemini.whole(answer.plan, f"fAk3{answer.token}"),
    gemini_stream,
    stream_type=lambda answer: SSE_TYPE if _sse(answer) else JSON_TYPE,
    request_id_header="x-goog-request-id",
)


def ollama_bad_request(err: RequestError, _request_id: str) -> JsonDict:
    return {"error": err.message}


def ollama_error(status: int, model: str, _request_id: str) -> JsonDict:
    return ollama.simulated_error(status, model)


def _where(answer: Answer, *, chat: bool) -> ollama.Where:
    """Ollama stamps each object with an RFC 3339 time (UTC here)."""
    stamp = datetime.fromtimestamp(answer.now, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return ollama.Where(chat, stamp)


def _ollama_api(*, chat: bool) -> Api:
    return Api(
        read_ollama_chat if chat else read_ollama_generate,
        ollama_bad_request,
        ollama_error,
        lambda answer: ollama.whole(_where(answer, chat=chat), answer.plan),
        lambda answer: ollama.stream(_where(answer, chat=chat), answer.plan),
        stream_type=lambda _answer: NDJSON_TYPE,
    )


OLLAMA_CHAT = _ollama_api(chat=True)
OLLAMA_GENERATE = _ollama_api(chat=False)

# Gemini answers under v1beta and v1 alike; google-genai 3.x defaults to v1, the REST docs show v1beta.
_GEMINI_PATHS = tuple(f"/{version}/models/{{model}}:{method}" for version in ("v1beta", "v1")
                      for method in ("generateContent", "streamGenerateContent"))

ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/messages", handler(ANTHROPIC)),
    *(("POST", path, handler(GEMINI)) for path in _GEMINI_PATHS),
    ("POST", "/api/chat", handler(OLLAMA_CHAT)),
    ("POST", "/api/generate", handler(OLLAMA_GENERATE)),
)
