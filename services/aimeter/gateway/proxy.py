"""Forwarding one request upstream and recording what happened, for any OpenAI-shaped API.

The body goes upstream as the client sent it (re-encoded only when we must add
``stream_options.include_usage`` or rewrite an alias), and the answer comes back unchanged.
Usage is read on the side; the event is built after the last byte went to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from aimeter.events import Status, TokenUsage, UsageSource
from aimeter.gateway.errors import openai_error
from aimeter.gateway.sse import StreamScanner
from aimeter.gateway.usage import Extracted
from aimeter.gateway.usage_openai import OpenAIChatStream, from_openai_body

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# Hop-by-hop and length headers are the server's business; everything else the upstream said is passed on.
_DROP_RESPONSE_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                          "server", "date", "set-cookie"}


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outcome:
    """What one upstream attempt produced; turned into a UsageEvent by the caller."""

    status: Status = Status.OK
    http_status: int = 0
    extracted: Extracted = field(default_factory=lambda: Extracted(TokenUsage(), UsageSource.NONE))
    first_token_at: datetime | None = None
    problem: str = ""
    marker: tuple[bytes, bytes] = (b"x-aimeter-event-id", b"")


def _response_headers(resp: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode("latin-1")) for k, v in resp.headers.items()
            if k.lower() not in _DROP_RESPONSE_HEADERS]


async def send_error(send: Send, status: int, message: str, param: str | None = None,
                     extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = openai_error(status, message, param)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})


def prepare_body(
    body: bytes, request: dict[str, Any], upstream_model: str | None, want_usage: bool
) -> tuple[bytes, bool]:
    """The upstream body, and whether we injected ``include_usage`` (then it is stripped on the way back)."""
    inject = False
    if want_usage and request.get("stream") is True:
        options = request.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            request["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
            inject = True
    if upstream_model and request.get("model") != upstream_model:
        request["model"] = upstream_model
    elif not inject:
        return body, False
    return orjson.dumps(request), inject


class Forwarder:
    """Shares one aiohttp session (connection pool) across all requests of a gateway process."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=True,
                                              skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, url: str, body: bytes, headers: dict[str, str], send: Send, receive: Receive, *,
                      stream: bool, strip_usage: bool, event_id: str) -> Outcome:
        """POST upstream and relay the answer; never raises for upstream or client trouble.

        The response carries ``x-aimeter-event-id`` so an app can find its own row in ClickHouse.
        """
        assert self._session is not None, "Forwarder.start() was not awaited"
        outcome = Outcome(marker=(b"x-aimeter-event-id", event_id.encode()))
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                outcome.http_status = resp.status
                if stream and resp.status == 200 and "text/event-stream" in resp.headers.get("content-type", ""):
                    await self._relay_stream(resp, send, receive, outcome, strip_usage)
                else:
                    await self._relay_whole(resp, send, outcome)
        except TimeoutError:
            message = f"upstream did not answer within {self.timeout.sock_read} s"
            await self._fail(send, outcome, Status.TIMEOUT, 504, message)
        except aiohttp.ClientError as exc:
            await self._fail(send, outcome, Status.UPSTREAM_ERROR, 502, f"upstream unreachable: {type(exc).__name__}")
        return outcome

    async def _fail(self, send: Send, outcome: Outcome, status: Status, http: int, message: str) -> None:
        if outcome.first_token_at is not None:  # headers already sent: the stream is simply cut
            outcome.status = Status.BROKEN_STREAM if status is Status.UPSTREAM_ERROR else status
            outcome.problem = message
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b""})
            return
        outcome.status, outcome.http_status, outcome.problem = status, http, message
        await send_error(send, http, message, extra_headers=[outcome.marker])

    async def _relay_whole(self, resp: aiohttp.ClientResponse, send: Send, outcome: Outcome) -> None:
        data = await resp.read()
        outcome.first_token_at = now()
        await send({"type": "http.response.start", "status": resp.status, "headers": [
            *_response_headers(resp), (b"content-length", str(len(data)).encode()), outcome.marker]})
        await send({"type": "http.response.body", "body": data})
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        outcome.extracted = from_openai_body(parsed)
        if resp.status >= 400:
            outcome.status = Status.UPSTREAM_ERROR
        elif parsed is None:
            outcome.problem = "upstream answered 2xx with a body that is not JSON"

    async def _relay_stream(self, resp: aiohttp.ClientResponse, send: Send, receive: Receive,
                            outcome: Outcome, strip_usage: bool) -> None:
        scanner = StreamScanner(OpenAIChatStream(), strip_injected_usage=strip_usage)
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [*_response_headers(resp), outcome.marker]})
        outcome.first_token_at = now()
        disconnect = asyncio.ensure_future(receive())  # resolves only when the client goes away
        pump = asyncio.ensure_future(self._pump(resp, send, scanner))
        try:
            await asyncio.wait({pump, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            outcome.status = Status.CLIENT_CANCELLED
        # Whatever usage the stream carried so far is kept (or estimated), even if it broke afterwards.
        outcome.extracted = scanner.usage()
        outcome.problem = scanner.problem
        if pump.done() and not pump.cancelled():
            pump.result()  # re-raises upstream errors into forward()'s handlers
            if not scanner.saw_done:
                outcome.status, outcome.problem = Status.BROKEN_STREAM, "stream ended without [DONE]"

    @staticmethod
    async def _pump(resp: aiohttp.ClientResponse, send: Send, scanner: StreamScanner) -> None:
        async for chunk in resp.content.iter_any():
            out = scanner.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = scanner.finish()
        await send({"type": "http.response.body", "body": tail})
