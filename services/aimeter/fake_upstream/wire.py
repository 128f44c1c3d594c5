"""The one request flow every fake API shares, and how answers go on the wire.

An API is an ``Api`` row of pure functions (read the body, shape the answer, shape errors); the
flow (parse, plan, wait, error or answer, stream with pacing / drop / in-stream error) is here once.
The fake accepts any credentials and records nothing about the caller.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import orjson
from aiohttp import web

from aimeter.fake_upstream.bodies import Call, Request, RequestError, load_json
from aimeter.fake_upstream.common import JsonDict, StreamParts
from aimeter.fake_upstream.hostile import hostile_answer, requested_attack
from aimeter.fake_upstream.malformed import malformed_body
from aimeter.fake_upstream.plan import Plan, plan_for

log = logging.getLogger(__name__)

LATENCY_MS_KEY = web.AppKey("fake_upstream_latency_ms", float)
SSE_TYPE = "text/event-stream; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
JSON_TYPE = "application/json"
_RUN_ID = secrets.token_hex(4)
_SEQ = itertools.count(1)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Answer(NamedTuple):
    """What a shape builder needs: the plan, a unique token for ids, the clock reading, the request."""

    plan: Plan
    token: str
    now: float
    body: dict[str, Any]
    call: Call


class Api(NamedTuple):
    """One wire API of the fake: pure functions from request to answer, in that API's own shapes."""

    read: Callable[[dict[str, Any], Call], Request]
    bad_request: Callable[[RequestError, str], JsonDict]  # 400 body for a refused request (error, request id)
    error: Callable[[int, str, str], JsonDict]  # body for `status=` (status, model, request id)
    whole: Callable[[Answer], JsonDict]
    stream: Callable[[Answer], StreamParts]
    stream_type: Callable[[Answer], str] | None = None  # None: server-sent events
    request_id_header: str = "x-request-id"


FROZEN_ID = "frozen0000000000000000"
FROZEN_TIME = 1_764_000_000.0


def next_token() -> str:
    """Unique per process run, cheap to make; APIs prefix it (`chatcmpl-…`, `msg_…`, `resp_…`)."""
    return f"{_RUN_ID}{next(_SEQ):016d}"


def json_response(status: int, obj: JsonDict, headers: dict[str, str]) -> web.Response:
    """An orjson-encoded JSON response."""
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON_TYPE, headers=headers)


def handler(api: Api) -> Handler:
    """The aiohttp handler for ``api``: parse, plan, wait, then an error, a whole answer or a stream."""

    async def handle(request: web.Request) -> web.StreamResponse:
        token = next_token()
        request_id = f"req_{token}"
        headers = {api.request_id_header: request_id}
        call = Call({**request.match_info, "method": request.path.rpartition(":")[2]}, request.query)
        try:
            raw = await request.read()
            body = load_json(raw)
            plan = plan_for(api.read(body, call), request.app[LATENCY_MS_KEY])
        except RequestError as err:
            return json_response(400, api.bad_request(err, request_id), headers)
        if plan.latency_s > 0:
            await asyncio.sleep(plan.latency_s)
        if plan.status is not None:
            return json_response(plan.status, api.error(plan.status, plan.model, request_id), headers)
        if plan.frozen:
            token, now = FROZEN_ID, FROZEN_TIME
        else:
            now = time.time()
        answer = Answer(plan, token, now, body, call)
        if (attack := requested_attack(raw)) is not None:
            return await hostile_answer(request, attack, api.whole(answer), headers)
        if plan.stream:
            content_type = api.stream_type(answer) if api.stream_type else SSE_TYPE
            return await send_stream(request, plan, api.stream(answer), content_type, headers)
        if plan.malformed:
            return web.Response(status=200, body=malformed_body(api.whole(answer), plan.malformed),
                                content_type=JSON_TYPE, headers=headers)
        return json_response(200, api.whole(answer), headers)

    return handle


async def send_stream(
    request: web.Request, plan: Plan, parts: StreamParts, content_type: str, headers: dict[str, str]
) -> web.StreamResponse:
    """Send a stream; a client leaving early is expected (cancellation tests), not an error."""
    response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache", **headers})
    await response.prepare(request)
    try:
        if plan.drop is not None:
            await _write_paced(response, parts.head, parts.content[: plan.drop], plan.gap_s)
            _cut_connection(request)
        elif plan.error_only:
            await response.write(parts.only_error or parts.error)
            await response.write_eof()
        elif plan.error_after is not None:
            await _write_paced(response, parts.head, parts.content[: plan.error_after], plan.gap_s)
            await response.write(parts.error)
            await response.write_eof()
        else:
            await _write_all(response, parts, plan.gap_s, plan.linger_s)
    except ConnectionResetError:
        log.debug("client left a stream early")
    return response


async def _write_all(response: web.StreamResponse, parts: StreamParts, gap_s: float, linger_s: float = 0.0) -> None:
    """The whole stream: in one write when no gap is asked (fast), else paced per delta; then, after
    ``linger_s``, the end of the response."""
    if gap_s <= 0:
        await response.write(b"".join((parts.head, *parts.content, parts.tail)))
    else:
        await _write_paced(response, parts.head, parts.content, gap_s)
        await response.write(parts.tail)
    if linger_s > 0:
        await asyncio.sleep(linger_s)
    await response.write_eof()


async def _write_paced(response: web.StreamResponse, head: bytes, content: list[bytes], gap_s: float) -> None:
    """Write the head, then each content frame after `gap_s`, for time-to-first-token tests."""
    if head:
        await response.write(head)
    for frame in content:
        await asyncio.sleep(gap_s)
        await response.write(frame)


def _cut_connection(request: web.Request) -> None:
    """Simulate an upstream dying mid-stream: no finish, no usage, no end event, connection closed."""
    transport = request.transport
    if transport is not None:
        transport.close()
