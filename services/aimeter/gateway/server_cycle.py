"""One request/response cycle of the gateway's HTTP/1.1 server: the ASGI ``receive`` and ``send``.

The response head is built when the first body chunk is sent, not at ``http.response.start``: by
then the server knows whether the whole body is in hand (then ``content-length``, one write for
head and body) or more is coming (then ``transfer-encoding: chunked``, each chunk written at once).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aimeter.gateway.server_conn import App, Connection

log = logging.getLogger("aimeter.gateway.server")

STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_SPECIAL = {b"content-length", b"transfer-encoding", b"connection"}
HIGH_WATER = 64 * 1024  # request body bytes held for an app that has not read them before we stop reading


def status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def plain_response(status: int, message: bytes) -> bytes:
    """A complete short text/plain answer that closes the connection (errors of the server itself)."""
    return b"".join([status_line(status), b"content-type: text/plain; charset=utf-8\r\n",
                     b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message), message])


class Cycle:
    """The scope, the request body as it arrives, and how far the response has got."""

    __slots__ = ("body", "buffered", "chunked", "complete", "conn", "disconnected", "expect_100", "head_only",
                 "headers", "http10", "keep_alive", "message_done", "remaining", "scope", "sent_all", "started",
                 "status", "task", "waiter", "wrote")

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool, *, expect_100: bool,
                 http10: bool, head_only: bool) -> None:
        self.conn, self.scope, self.keep_alive, self.expect_100 = conn, scope, keep_alive, expect_100
        self.http10, self.head_only = http10, head_only
        self.body: list[bytes] = []
        self.buffered = 0
        self.message_done = self.sent_all = self.disconnected = False
        self.started = self.wrote = self.complete = self.chunked = False
        self.status = 0
        self.headers: Any = ()
        self.remaining = -1  # body bytes still due under the app's own content-length; -1: no such header
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    # fed by the connection
    def feed(self, data: bytes) -> None:
        if self.complete:
            return  # answered already (e.g. 413): the rest of the body is read and dropped
        self.body.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def end_of_body(self) -> None:
        self.message_done = True
        self._wake()

    def disconnect(self) -> None:
        """The client is gone (or its request was refused mid-body). An app that has read the whole body,
        sent nothing yet and is not waiting in ``receive()`` waits on something else, e.g. its upstream's
        answer: nobody is left to take that answer, so the app is cancelled, and what it holds (an upstream
        connection, a pool slot) is released now rather than when the upstream finishes. The app records
        what happened in its own ``finally``. A streaming app keeps a ``receive()`` waiting and is told."""
        self.disconnected = True
        task = self.task
        if self.waiter is None and self.sent_all and not self.started and task is not None and not task.done():
            task.cancel()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        self.waiter = waiter = self.conn.loop.create_future()
        await waiter

    # ASGI
    async def receive(self) -> dict[str, Any]:
        if self.expect_100:
            self.expect_100 = False
            if not self.wrote and not self.conn.closed:
                self.conn.transport.write(_CONTINUE)
        if not self.sent_all:
            while not (self.body or self.message_done or self.disconnected):
                await self._wait()
            if self.disconnected:
                return {"type": "http.disconnect"}
            chunks = self.body
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.body, self.buffered = [], 0
            self.sent_all = more_done = self.message_done
            if self.conn.read_paused:
                self.conn.maybe_resume_reading()
            return {"type": "http.request", "body": body, "more_body": not more_done}
        # Nothing more to read: this call stands for "tell me when the client goes away" (proxy._relay_stream).
        while not (self.disconnected or self.complete):
            await self._wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if not self.started:
            self._start(message)
            return
        if message["type"] != "http.response.body":
            raise RuntimeError(f"expected http.response.body, got {message['type']!r}")
        if self.complete:
            raise RuntimeError("the response is already complete")
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()  # a slow client holds the app back instead of growing our buffer
        if self.disconnected:
            return  # as uvicorn: the app learns of it from receive()
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if not self.wrote:
            out = self._head(body, more)
            self.wrote = True
        else:
            out = self._frame(body, more)
        if out:
            conn.transport.write(out)
        if not more:
            self.complete = True
            self._wake()
            conn.response_done(self)

    def _start(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.start":
            raise RuntimeError(f"expected http.response.start, got {message['type']!r}")
        self.started = True
        self.status = message["status"]
        self.headers = message.get("headers") or ()

    def _frame(self, body: bytes, more: bool) -> bytes:
        """A later body chunk as it goes on the wire."""
        if self.head_only:
            return b""
        if self.chunked:
            if body:
                return b"".join((b"%x\r\n" % len(body), body, b"\r\n", b"" if more else _LAST_CHUNK))
            return b"" if more else _LAST_CHUNK
        if self.remaining >= 0:
            self._count(len(body), more)
        return body

    def _head(self, body: bytes, more: bool) -> bytes:
        """Status line, the app's headers, our framing headers and the first chunk, as one bytes."""
        status = self.status
        parts = [status_line(status)]
        app_chunked = own_connection = False
        for name, value in self.headers:
            if name.lower() in _SPECIAL:  # rare: the proxy drops these from upstream answers
                app_chunked, own_connection = self._special(name.lower(), value, app_chunked, own_connection)
            parts += (name, b": ", value, b"\r\n")
        no_body = self.head_only or status < 200 or status in (204, 304)
        if not no_body and not (self.remaining >= 0 or app_chunked):  # the app did not frame it: we do
            if not more:
                parts.append(b"content-length: %d\r\n" % len(body))
            elif self.http10:
                self.keep_alive = False  # HTTP/1.0 has no chunked encoding: the body ends with the connection
            else:
                parts.append(b"transfer-encoding: chunked\r\n")
                app_chunked = True
        if not own_connection:
            if not self.keep_alive:
                parts.append(b"connection: close\r\n")
            elif self.http10:
                parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        # A CR or LF inside a header name or value would let a header smuggle a second header or response.
        # Lines: one per part, except that each app header is four parts.
        if head.count(b"\n") != len(parts) - 3 * len(self.headers):
            raise RuntimeError("refusing a response header with a line break in its name or value")
        self.chunked = app_chunked
        if no_body:
            self.head_only = True  # whatever the app sends from here on is dropped
            return head
        out = self._frame(body, more)
        return head + out if out else head

    def _special(self, name: bytes, value: bytes, chunked: bool, own_connection: bool) -> tuple[bool, bool]:
        if name == b"content-length":
            self.remaining = int(value)
        elif name == b"transfer-encoding":
            chunked = value.lower() == b"chunked"
        else:
            own_connection = True
            if value.lower() == b"close":
                self.keep_alive = False
        return chunked, own_connection

    def _count(self, size: int, more: bool) -> None:
        self.remaining -= size
        if self.remaining < 0:
            raise RuntimeError("response body longer than its content-length")
        if not more and self.remaining:
            raise RuntimeError("response body shorter than its content-length")

    async def run(self, app: App) -> None:
        """The app on this request; an app fault is logged and ends this request, never the server."""
        try:
            await app(self.scope, self.receive, self.send)
            if not self.complete:
                if not self.disconnected:  # a client that left needs no answer (e.g. a stream it cancelled)
                    log.error("ASGI app returned without completing the response to %s %s",
                              self.scope["method"], self.scope["path"])
                self._abandon()
        except asyncio.CancelledError:
            if not self.disconnected:
                raise  # not ours (server shutdown): let the task end cancelled
            self._abandon()
        except Exception:
            log.exception("exception in the ASGI app serving %s %s", self.scope["method"], self.scope["path"])
            self._abandon()
        finally:
            self.conn.shared.tasks.discard(self.task)

    def _abandon(self) -> None:
        """500 if no byte of the response went out yet; otherwise cut the connection (never a fake end)."""
        if self.complete:
            return
        self.complete, self.keep_alive = True, False
        conn = self.conn
        if not conn.closed:
            if not self.wrote:
                # A request whose body turned out malformed (conn.error) gets that 400 rather than a 500.
                conn.transport.write(conn.error or plain_response(500, b"Internal Server Error"))
            conn.transport.close()
        self._wake()
        conn.response_done(self)
