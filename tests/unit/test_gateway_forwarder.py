"""The Forwarder over the HTTP/1.1 client: upstream trouble becomes the API's own error shape and an outcome.

Raw servers provoke each case (garbage, silence, refusal, a stream cut mid-way, a client that leaves);
the ASGI ``send``/``receive`` pair is recorded, as uvicorn would see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import uvloop

from aimeter.events import Status, UsageSource
from aimeter.gateway.providers.openai import OPENAI_CHAT
from aimeter.gateway.proxy import Call, Forwarder, Outcome

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ANSWER = orjson.dumps({"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini-2024", "choices": [],
                       "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"


async def forward(url: str, *, stream: bool = False, timeout_s: float = 5.0,
                  leave_after: float | None = None) -> tuple[Outcome, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600 if leave_after is None else leave_after)
        return {"type": "http.disconnect"}

    forwarder = Forwarder(timeout_s)
    await forwarder.start()
    try:
        call = Call(OPENAI_CHAT, url, b'{"model": "gpt-4o-mini"}', {"content-type": "application/json"}, stream,
                    False, "0190b5c3-aaaa-7bbb-8ccc-123456789abc")
        return await forwarder.forward(call, send, receive), sent
    finally:
        await forwarder.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(main())


def test_a_whole_answer_is_relayed_with_usage_and_the_event_id():
    async def handler(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: up\r\nX-Request-Id: r1\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))

    async def main() -> None:
        server, url = await serve(handler)
        outcome, sent = await forward(url)
        server.close()
        assert (outcome.status, outcome.http_status, outcome.extracted.source) == (Status.OK, 200,
                                                                                   UsageSource.REPORTED)
        assert outcome.extracted.usage.input_tokens == 7
        headers = dict(sent[0]["headers"])
        assert headers[b"x-aimeter-event-id"] == b"0190b5c3-aaaa-7bbb-8ccc-123456789abc"
        assert headers[b"x-request-id"] == b"r1"
        assert b"server" not in headers
        assert headers[b"content-length"] == str(len(ANSWER)).encode()
        assert sent[1]["body"] == ANSWER

    run(main)


@pytest.mark.parametrize(("reply", "status", "http", "needle"), [
    (b"garbage\r\n\r\n", Status.UPSTREAM_ERROR, 502, "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut", Status.UPSTREAM_ERROR, 502, "mid-body"),
    (None, Status.TIMEOUT, 504, "in time"),
])
def test_upstream_trouble_is_an_error_in_the_apis_shape(reply, status, http, needle):
    async def handler(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if reply is None:
            await asyncio.sleep(5)
            return
        writer.write(reply)
        await writer.drain()

    async def main() -> None:
        server, url = await serve(handler)
        outcome, sent = await forward(url, timeout_s=0.3)
        server.close()
        assert (outcome.status, outcome.http_status) == (status, http)
        assert sent[0]["status"] == http
        body = orjson.loads(sent[1]["body"])
        assert needle in body["error"]["message"]
        assert body["error"]["type"] == "api_error"
        assert "127.0.0.1" not in body["error"]["message"]  # upstream addresses are not the client's business

    run(main)


def test_unreachable_upstream_is_502():
    async def main() -> None:
        server, url = await serve(lambda r, w: asyncio.sleep(0))
        server.close()
        await server.wait_closed()
        outcome, sent = await forward(url)
        assert (outcome.status, outcome.http_status, sent[0]["status"]) == (Status.UPSTREAM_ERROR, 502, 502)
        assert "cannot connect" in orjson.loads(sent[1]["body"])["error"]["message"]

    run(main)


def sse(i: int) -> bytes:
    return b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                                     "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]}) + b"\n\n"


def test_a_stream_cut_mid_way_is_broken_and_keeps_what_was_relayed():
    async def handler(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(3):
            event = sse(i)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.01)

    async def main() -> None:
        server, url = await serve(handler)
        outcome, sent = await forward(url, stream=True)
        server.close()
        assert outcome.status is Status.BROKEN_STREAM
        assert outcome.http_status == 200
        assert outcome.extracted.source is UsageSource.ESTIMATED  # the text relayed so far is still billed
        assert b"".join(m.get("body", b"") for m in sent[1:]) == b"".join(sse(i) for i in range(3))

    run(main)


def test_a_client_that_leaves_cancels_the_stream_and_drops_the_upstream_connection():
    async def main() -> None:
        gone = asyncio.Event()  # the upstream saw its connection closed: no more tokens generated for nobody

        async def handler(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for i in range(1000):
                    event = sse(i)
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(0.01)
            except ConnectionError:
                gone.set()

        server, url = await serve(handler)
        outcome, _ = await forward(url, stream=True, leave_after=0.1)
        await asyncio.wait_for(gone.wait(), 5)
        server.close()
        assert outcome.status is Status.CLIENT_CANCELLED
        assert outcome.extracted.source is UsageSource.ESTIMATED

    run(main)


def test_a_stream_that_reached_done_is_ok_although_the_client_hangs_up_before_the_upstream_closes():
    """The openai SDK closes its connection on ``[DONE]``; an upstream (or a load balancer) may take a while
    to end the response after it. The stream was complete, so it is ``ok``, not ``client_cancelled``."""
    usage = b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [],
                                      "usage": {"prompt_tokens": 7, "completion_tokens": 3}}) + b"\n\n"

    async def handler(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in (sse(0), usage, b"data: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(3)  # the terminating chunk comes late

    async def main() -> None:
        server, url = await serve(handler)
        outcome, _ = await forward(url, stream=True, leave_after=0.3)
        server.close()
        assert outcome.status is Status.OK
        assert outcome.extracted.source is UsageSource.REPORTED
        assert outcome.extracted.usage.input_tokens == 7

    run(main)


def test_a_broken_stream_keeps_every_reason():
    """The scanner's own finding (an event cut in half) and the gateway's (no documented end) both reach the event."""
    async def handler(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in (sse(0), sse(1)[:20]):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        server, url = await serve(handler)
        outcome, _ = await forward(url, stream=True)
        server.close()
        assert outcome.status is Status.BROKEN_STREAM
        assert "stream ended inside an event" in outcome.problem
        assert "stream ended before its documented end" in outcome.problem

    run(main)
