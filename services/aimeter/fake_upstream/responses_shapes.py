"""Pure builders of OpenAI Responses API objects (``POST /v1/responses``) for the fake upstream.

Shapes follow OpenAI's API reference for the Response object and its streaming events: a stream is
``event: <type>`` + ``data: {"type": <type>, …, "sequence_number": n}`` frames, from
``response.created`` / ``response.in_progress`` through ``response.output_text.delta`` to a terminal
``response.completed`` (or ``response.incomplete`` when ``max_output_tokens`` cut the answer, or
``response.failed``), each terminal event carrying the final Response with its ``usage``. There is
no ``[DONE]``. Usage: ``input_tokens`` includes ``input_tokens_details.cached_tokens``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from aimeter.fake_upstream.common import JsonDict, StreamParts, Usage, content_text, partial, sse_event, text_pieces
from aimeter.fake_upstream.plan import Plan

_FAILURE = {"code": "server_error", "message": "The server had an error while processing your request."}


class Ids(NamedTuple):
    """Ids of one answer: the response, its message item and (if any) its reasoning item."""

    response: str
    message: str
    reasoning: str
    created: int


def ids_for(token: str, created: int) -> Ids:
    return Ids(f"resp_{token}", f"msg_{token}", f"rs_{token}", created)


def usage_object(usage: Usage) -> JsonDict:
    """Responses `usage`: `input_tokens` includes cached tokens; reasoning is part of `output_tokens`."""
    input_details: JsonDict = {"cached_tokens": usage.cached}
    if usage.cache_write:
        input_details["cache_write_tokens"] = usage.cache_write
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": input_details,
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.prompt + usage.completion,
    }


def _text_part(text: str) -> JsonDict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(ids: Ids, text: str, status: str) -> JsonDict:
    return {"id": ids.message, "type": "message", "status": status, "role": "assistant",
            "content": [_text_part(text)] if status != "in_progress" else []}


def reasoning_item(ids: Ids) -> JsonDict:
    return {"id": ids.reasoning, "type": "reasoning", "summary": []}


def _output(ids: Ids, plan: Plan, text: str, status: str) -> list[JsonDict]:
    items = [reasoning_item(ids)] if plan.usage.reasoning else []
    return [*items, message_item(ids, text, status)]


def response_object(ids: Ids, plan: Plan, body: dict[str, Any], status: str, **fields: Any) -> JsonDict:
    """A Response as documented; `status` is in_progress, completed, incomplete or failed."""
    truncated = status == "incomplete"
    return {
        "id": ids.response, "object": "response", "created_at": ids.created, "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": plan.model, "output": [], "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
        "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": None, "user": None, "metadata": {},
        **fields,
    }


def final_status(plan: Plan) -> str:
    return "incomplete" if plan.finish_reason == "length" else "completed"


def whole(ids: Ids, plan: Plan, body: dict[str, Any]) -> JsonDict:
    """The non-streamed answer: the finished Response."""
    status = final_status(plan)
    text = content_text(plan.words)
    return response_object(ids, plan, body, status, output=_output(ids, plan, text, status),
                           usage=usage_object(plan.usage))


class _Events:
    """Numbers the events of one stream (`sequence_number` starts at 0 and never repeats)."""

    def __init__(self) -> None:
        self.seq = 0

    def frame(self, kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, **fields, "sequence_number": self.seq}
        self.seq += 1
        return sse_event(kind, obj)


def _head(events: _Events, ids: Ids, plan: Plan, body: dict[str, Any]) -> bytes:
    started = response_object(ids, plan, body, "in_progress")
    frames = [events.frame("response.created", response=started),
              events.frame("response.in_progress", response=started)]
    index = 0
    if plan.usage.reasoning:
        frames.append(events.frame("response.output_item.added", output_index=0, item=reasoning_item(ids)))
        frames.append(events.frame("response.output_item.done", output_index=0, item=reasoning_item(ids)))
        index = 1
    frames.append(events.frame("response.output_item.added", output_index=index,
                               item=message_item(ids, "", "in_progress")))
    frames.append(events.frame("response.content_part.added", item_id=ids.message, output_index=index,
                               content_index=0, part=_text_part("")))
    return b"".join(frames)


def stream(ids: Ids, plan: Plan, body: dict[str, Any]) -> StreamParts:
    """The documented event sequence; `error` is a `response.failed` carrying the usage spent so far."""
    events = _Events()
    head = _head(events, ids, plan, body)
    after_head = events.seq
    index = 1 if plan.usage.reasoning else 0
    where = {"item_id": ids.message, "output_index": index, "content_index": 0}
    pieces = text_pieces(plan.words, plan.chunks)
    content = [events.frame("response.output_text.delta", **where, delta=p, logprobs=[]) for p in pieces]
    text, status = content_text(plan.words), final_status(plan)
    done = response_object(ids, plan, body, status, output=_output(ids, plan, text, status),
                           usage=usage_object(plan.usage))
    tail = b"".join((
        events.frame("response.output_text.done", **where, text=text, logprobs=[]),
        events.frame("response.content_part.done", **where, part=_text_part(text)),
        events.frame("response.output_item.done", output_index=index, item=message_item(ids, text, status)),
        events.frame(f"response.{status}", response=done),
    ))
    spent = partial(plan.usage, plan.error_after or 0, plan.chunks)
    failed = response_object(ids, plan, body, "failed", error=_FAILURE, usage=usage_object(spent),
                             output=_output(ids, plan, "", "incomplete"))
    error_seq = _Events()
    error_seq.seq = after_head + min(plan.error_after or 0, len(pieces))
    # Failing before it started: the documented `error` event (type, code, message, param), and nothing else.
    only = _Events().frame("error", code="server_error", message=_FAILURE["message"], param=None)
    return StreamParts(head, content, tail, error_seq.frame("response.failed", response=failed), only)
