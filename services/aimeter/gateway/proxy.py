"""Forwarding one request upstream and recording what happened, for any API a provider unit declares.

The body goes upstream as the client sent it (re-encoded only when we must add
``stream_options.include_usage`` or rewrite an alias), and the answer comes back unchanged.
Usage is read on the side; the event is built after the last byte went to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from aimeter.events import Status, TokenUsage, UsageSource
from aimeter.gateway.http1 import MAX_BODY, Response, UpstreamError, UpstreamTooLargeError
from aimeter.gateway.http1_pool import Pool
from aimeter.gateway.providers.base import ApiSpec
from aimeter.gateway.sse import StreamScanner
from aimeter.gateway.streams import stream_end
from aimeter.gateway.usage import Extracted

# Until the answer says otherwise; shared (Extracted and TokenUsage are frozen) so no request builds its own.
_NOTHING_YET = Extracted(TokenUsage(), UsageSource.NONE)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# Hop-by-hop and length headers are the server's business; everything else the upstream said is passed on.
# (A gzip/deflate Content-Encoding never gets here: the client decodes it and drops the header.)
_DROP_RESPONSE_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date",
                          b"set-cookie"}
CONNECT_TIMEOUT_S = 10.0
_OWN_PREFIX = b"x-aimeter-"  # our headers: an upstream never gets to set (or spoof) them
_SSE = b"text/event-stream"
# What pydantic-validating servers (vLLM, SGLang) take as true for a bool field such as ``stream``.
_LAX_TRUE = frozenset({1, "1", "on", "t", "true", "y", "yes"})


def lax_true(value: Any) -> bool:
    """Whether a pydantic-validating upstream reads ``value`` as true (``"stream": 1`` or ``"true"`` streams)."""
    if value is True:
        return True
    if isinstance(value, str):
        return value.lower() in _LAX_TRUE
    return type(value) is int and value == 1


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outcome:
    """What one upstream attempt produced; turned into a UsageEvent by the caller."""

    status: Status = Status.OK
    http_status: int = 0
    extracted: Extracted = _NOTHING_YET
    first_token_at: datetime | None = None
    problem: str = ""
    marker: tuple[bytes, bytes] = (b"x-aimeter-event-id", b"")
    streamed: bool = False  # relayed as a stream: what the upstream sent back decides, not the request's flag
    began: float = 0.0  # perf_counter() at the request's start, and around the upstream call (metrics: added time)
    forward_started: float = 0.0
    forward_ended: float = 0.0


@dataclass(frozen=True)
class Call:
    """One upstream call, fully decided by the gateway (the client never picks the URL)."""

    spec: ApiSpec
    url: str
    body: bytes
    headers: dict[str, str]
    stream: bool
    strip_usage: bool
    event_id: str


def _response_headers(resp: Response) -> list[tuple[bytes, bytes]]:
    return [item for item in resp.headers
            if item[0] not in _DROP_RESPONSE_HEADERS and not item[0].startswith(_OWN_PREFIX)]


async def send_json(send: Send, status: int, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None,
                    ) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})


def prepare_body(
    body: bytes, request: dict[str, Any], upstream_model: str | None, inject_usage: bool
) -> tuple[bytes, bool]:
    """The upstream body, and whether we injected ``include_usage`` (then it is stripped on the way back)."""
    inject = False
    stream = request.get("stream")
    if inject_usage and (stream is True or (stream is not None and stream is not False and lax_true(stream))):
        options = request.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            request["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            inject = True
    if upstream_model and request.get("model") != upstream_model:
        request["model"] = upstream_model
    elif not inject:
        return body, False
    return orjson.dumps(request), inject


def parse_whole(spec: ApiSpec, data: bytes) -> Extracted:
    """Usage from a complete body; each API's ``from_body`` knows its own shapes (Gemini's JSON-array stream too)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Extracted(TokenUsage(), UsageSource.NONE, problem="upstream body is not JSON")
    return spec.from_body(parsed)


class Forwarder:
    """Shares one upstream connection pool across all requests of a gateway process."""

    def __init__(self, timeout_s: float, ssl_context: ssl.SSLContext | None = None, *,
                 max_body: int = MAX_BODY) -> None:
        self.timeout_s = timeout_s
        self.max_body = max_body  # a whole answer held, a compressed one inflated, one stream event scanned
        self._ssl_context = ssl_context
        self._pool: Pool | None = None

    async def start(self) -> None:
        self._pool = Pool(ssl_context=self._ssl_context, connect_timeout=CONNECT_TIMEOUT_S, read_timeout=self.timeout_s,
                          max_body=self.max_body)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def forward(self, call: Call, send: Send, receive: Receive, outcome: Outcome | None = None) -> Outcome:
        """POST upstream and relay the answer into ``outcome`` (the caller's, so that it keeps what happened
        even if this raises); never raises for upstream or client trouble.

        A 200 is relayed as a stream when the request asked for one or the upstream sends ``text/event-stream``
        anyway (``"stream": 1`` streams on vLLM). The response carries ``x-aimeter-event-id`` so an app can find
        its own row in ClickHouse.
        """
        assert self._pool is not None, "Forwarder.start() was not awaited"
        if outcome is None:
            outcome = Outcome(marker=(b"x-aimeter-event-id", call.event_id.encode()))
        try:
            resp = await self._pool.request(call.url, call.headers, call.body)
            try:
                outcome.http_status = resp.status
                if resp.status == 200 and (call.stream or _SSE in (resp.header(b"content-type") or b"").lower()):
                    outcome.streamed = True
                    await self._relay_stream(call, resp, send, receive, outcome)
                else:
                    await self._relay_whole(call.spec, resp, send, outcome)
            finally:
                resp.close()
        except TimeoutError as exc:  # UpstreamTimeoutError: connect, pool slot, or upstream silence
            message = f"upstream did not answer in time: {exc}"
            await self._fail(call.spec, send, outcome, Status.TIMEOUT, http=504, message=message)
        except UpstreamTooLargeError as exc:
            message = f"upstream answer refused: {exc} (the gateway's limit, AIMETER_UPSTREAM_MAX_BODY_BYTES)"
            await self._fail(call.spec, send, outcome, Status.UPSTREAM_ERROR, http=502, message=message)
        except UpstreamError as exc:
            message = f"upstream unreachable or broken: {exc}"
            await self._fail(call.spec, send, outcome, Status.UPSTREAM_ERROR, http=502, message=message)
        return outcome

    @staticmethod
    async def _fail(spec: ApiSpec, send: Send, outcome: Outcome, status: Status, *, http: int, message: str) -> None:
        if outcome.first_token_at is not None:  # headers already sent: the stream is simply cut
            outcome.status = Status.BROKEN_STREAM if status is Status.UPSTREAM_ERROR else status
            outcome.problem = message
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b""})
            return
        outcome.status, outcome.http_status, outcome.problem = status, http, message
        await send_json(send, http, spec.error(http, message, None), [outcome.marker])

    @staticmethod
    async def _relay_whole(spec: ApiSpec, resp: Response, send: Send, outcome: Outcome) -> None:
        data = await resp.read()
        outcome.first_token_at = now()
        await send({"type": "http.response.start", "status": resp.status, "headers": [
            *_response_headers(resp), (b"content-length", str(len(data)).encode()), outcome.marker]})
        await send({"type": "http.response.body", "body": data})
        outcome.extracted = parse_whole(spec, data)
        outcome.problem = outcome.extracted.problem
        if resp.status >= 400 or outcome.extracted.error_type:  # an error body, whatever its HTTP status
            outcome.status = Status.UPSTREAM_ERROR

    async def _relay_stream(self, call: Call, resp: Response, send: Send, receive: Receive,
                            outcome: Outcome) -> None:
        spec = call.spec
        framed = spec.stream_reader is not None and (
            spec.ndjson or b"text/event-stream" in (resp.header(b"content-type") or b"").lower())
        scanner = StreamScanner(spec.stream_reader(), ndjson=spec.ndjson, strip_injected_usage=call.strip_usage,
                                max_event_bytes=self.max_body) if framed and spec.stream_reader is not None else None
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [*_response_headers(resp), outcome.marker]})
        outcome.first_token_at = now()
        whole: list[bytes] = []
        disconnect = asyncio.ensure_future(receive())  # resolves only when the client goes away
        pump = asyncio.ensure_future(self._pump(resp, send, scanner, whole, self.max_body))
        try:
            await asyncio.wait({pump, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
        cancelled = not pump.done()
        if cancelled:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        # Whatever usage the stream carried so far is kept (or estimated), even if it broke afterwards.
        outcome.extracted = scanner.usage() if scanner else parse_whole(spec, b"".join(whole))
        outcome.problem = scanner.problem if scanner else outcome.extracted.problem
        if not cancelled and not pump.cancelled():
            pump.result()  # re-raises upstream errors into forward()'s handlers
        complete = scanner is not None and scanner.complete
        outcome.status, reason = stream_end(framed=scanner is not None, complete=complete, cancelled=cancelled,
                                            extracted=outcome.extracted)
        outcome.problem = "; ".join(p for p in (outcome.problem, reason) if p)  # the scanner's reason is kept too

    @staticmethod
    async def _pump(resp: Response, send: Send, scanner: StreamScanner | None, whole: list[bytes],
                    limit: int) -> None:
        held = 0
        while chunk := await resp.next_chunk():
            if scanner is None:
                held += len(chunk)
                if held > limit:  # kept whole to be parsed at the end, so held to the same cap as a whole answer
                    raise UpstreamTooLargeError(f"the upstream's unframed stream is longer than {limit} bytes")
                whole.append(chunk)  # unframed stream (e.g. Gemini's JSON array): parsed once it ends
                out = chunk
            else:
                out = scanner.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = scanner.finish() if scanner else b""
        await send({"type": "http.response.body", "body": tail})
