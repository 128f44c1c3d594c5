"""The fake's OpenAI-family endpoints: Chat Completions, legacy Completions, Embeddings, Responses.

Chat and legacy Completions are also what vLLM, SGLang, TGI and llama.cpp speak; the ``timings=1``
directive adds llama.cpp's ``timings`` object to them. Errors use OpenAI's error object.
"""

from __future__ import annotations

from typing import Any

from aimeter.fake_upstream import openai_shapes as shapes
from aimeter.fake_upstream import responses_shapes as responses
from aimeter.fake_upstream.bodies import (
    Call,
    Request,
    RequestError,
    read_chat,
    read_completions,
    read_embeddings,
    read_responses,
)
from aimeter.fake_upstream.common import JsonDict, StreamParts, content_pieces, content_text, text_pieces
from aimeter.fake_upstream.wire import Answer, Api, Handler, handler


def bad_request(err: RequestError, _request_id: str) -> JsonDict:
    return shapes.error_object(err.message, "invalid_request_error", err.param, err.code)


def simulated_error(status: int, model: str, _request_id: str) -> JsonDict:
    return shapes.simulated_error(status, model)


def _envelope(answer: Answer, prefix: str) -> shapes.Envelope:
    return shapes.Envelope(f"{prefix}{answer.token}", int(answer.now), answer.plan.model)


def _timings(answer: Answer) -> JsonDict | None:
    return shapes.timings_object(answer.plan.usage) if answer.plan.timings else None


def chat_whole(answer: Answer) -> JsonDict:
    plan = answer.plan
    obj = shapes.completion_object(_envelope(answer, "chatcmpl-"), content_text(plan.words), plan.finish_reason,
                                   plan.usage, plan.style.dialect)
    if plan.timings:
        obj["timings"] = _timings(answer)
    return obj


def chat_stream(answer: Answer) -> StreamParts:
    plan, env = answer.plan, _envelope(answer, "chatcmpl-")
    return StreamParts(
        shapes.stream_head(env, plan.style),
        shapes.stream_content(env, plan.style, content_pieces(plan.words, plan.chunks)),
        shapes.stream_tail(env, plan.style, plan.finish_reason, plan.usage, _timings(answer)),
        shapes.stream_error_frame(),
    )


def completions_whole(answer: Answer) -> JsonDict:
    plan = answer.plan
    choice = shapes.text_choice(content_text(plan.words), plan.finish_reason)
    obj = shapes.text_completion_object(_envelope(answer, "cmpl-"), [choice], plan.usage, plan.style)
    if plan.timings:
        obj["timings"] = _timings(answer)
    return obj


def completions_stream(answer: Answer) -> StreamParts:
    plan = answer.plan
    content, tail = shapes.completions_stream(_envelope(answer, "cmpl-"), plan.style,
                                              text_pieces(plan.words, plan.chunks), plan.finish_reason, plan.usage,
                                              timings=_timings(answer))
    return StreamParts(b"", content, tail, shapes.stream_error_frame())


def _embeddings_input_count(answer: Answer) -> int:
    given = answer.body.get("input")
    if isinstance(given, list) and given and not all(isinstance(t, int) for t in given):
        return len(given)
    return 1


def embeddings_whole(answer: Answer) -> JsonDict:
    dims = answer.body.get("dimensions")
    dimensions = dims if isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= 4096 else 8
    base64_encoded = answer.body.get("encoding_format") == "base64"
    return shapes.embeddings_object(answer.plan.model, _embeddings_input_count(answer), dimensions, base64_encoded,
                                    answer.plan.usage.prompt)


def _no_stream(_answer: Answer) -> StreamParts:
    raise AssertionError("embeddings never stream")  # read_embeddings always plans stream=False


def responses_whole(answer: Answer) -> JsonDict:
    return responses.whole(responses.ids_for(answer.token, int(answer.now)), answer.plan, answer.body)


def responses_stream(answer: Answer) -> StreamParts:
    return responses.stream(responses.ids_for(answer.token, int(answer.now)), answer.plan, answer.body)


CHAT = Api(read_chat, bad_request, simulated_error, chat_whole, chat_stream)
COMPLETIONS = Api(read_completions, bad_request, simulated_error, completions_whole, completions_stream)
EMBEDDINGS = Api(read_embeddings, bad_request, simulated_error, embeddings_whole, _no_stream)
RESPONSES = Api(read_responses, bad_request, simulated_error, responses_whole, responses_stream)

ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/chat/completions", handler(CHAT)),
    ("POST", "/v1/completions", handler(COMPLETIONS)),
    ("POST", "/v1/embeddings", handler(EMBEDDINGS)),
    ("POST", "/v1/responses", handler(RESPONSES)),
)


def _azure(api: Api) -> Api:
    """Azure OpenAI: the same shapes under ``/openai/deployments/{deployment}/…``; the body names no model."""

    def read(body: dict[str, Any], call: Call) -> Request:
        return api.read({"model": call.params["deployment"], **body}, call)

    return api._replace(read=read)


AZURE_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/openai/deployments/{deployment}/chat/completions", handler(_azure(CHAT))),
    ("POST", "/openai/deployments/{deployment}/completions", handler(_azure(COMPLETIONS))),
    ("POST", "/openai/deployments/{deployment}/embeddings", handler(_azure(EMBEDDINGS))),
)
