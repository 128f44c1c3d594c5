"""One client connection of the gateway's HTTP/1.1 server, and the ASGI receive/send of one request.

uvicorn's protocol layer was ~21% of the gateway's CPU at saturation and wrote a response's head
and body in two socket writes. The gateway serves one raw ASGI app on HTTP/1.1 only, so this is
the small part of a server it needs: httptools (llhttp) parses, a ``Cycle`` per request (slots, no
per-request closures) carries the scope, the request body and the response state, and the head is
held back until the first body chunk so a small response leaves in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import httptools

from aimeter.gateway.server_cycle import HIGH_WATER, Cycle, plain_response

log = logging.getLogger("aimeter.gateway.server")

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; beyond this: 431
MAX_HEADERS = 256
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
_METHODS = {m: m.decode() for m in (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")}


class HeadTooLargeError(Exception):
    """Raised inside a parser callback to stop parsing; answered with 431."""


class Shared:
    """What every connection of one server shares: the app, settings, and the live connections and tasks."""

    __slots__ = ("app", "connections", "keep_alive_s", "loop", "stopping", "tasks")

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop, keep_alive_s: float) -> None:
        self.app, self.loop, self.keep_alive_s = app, loop, keep_alive_s
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False


class Connection(asyncio.Protocol):
    """Parses requests in order and serves them one at a time; pipelined ones wait in ``queue``."""

    __slots__ = ("active", "client", "closed", "drain_waiter", "error", "expect", "head_bytes", "headers",
                 "idle_since", "in_head", "lingering", "loop", "parser", "parsing", "queue", "read_paused", "server",
                 "shared", "timer", "transport", "upgraded", "url", "write_paused")

    def __init__(self, shared: Shared) -> None:
        self.shared, self.loop = shared, shared.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.in_head = self.expect = self.read_paused = self.write_paused = self.closed = self.upgraded = False
        self.lingering = False  # answered and closing, but the client is still sending that request's body
        self.parsing: Cycle | None = None  # the request whose body the parser is reading
        self.active: Cycle | None = None  # the request the app is answering
        self.queue: deque[Cycle] = deque()  # pipelined requests, parsed, waiting their turn
        self.error: bytes | None = None  # a 400/431 to send once the requests before it are answered
        self.drain_waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # TCP_NODELAY: uvloop and asyncio set it already
        self.client = _addr(transport.get_extra_info("peername"))
        self.server = _addr(transport.get_extra_info("sockname"))
        self.shared.connections.add(self)
        self.idle_since = self.loop.time()
        self.timer = self.loop.call_later(self.shared.keep_alive_s, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.shared.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active is not None:
            self.active.disconnect()
        if self.parsing is not None and self.parsing is not self.active:
            self.parsing.disconnect()
        self.queue.clear()  # pipelined requests nobody is left to answer
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        if self.upgraded or self.error is not None:
            return  # no protocol switch here; after a refused request nothing more is parsed
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True  # served as plain HTTP (no WebSocket here), then closed
            if self.parsing is not None:  # llhttp stops at the head of an upgrade: no body will be parsed
                self.parsing.end_of_body()
                self.parsing = None
            for cycle in (self.active, *self.queue):
                if cycle is not None:
                    cycle.keep_alive = False
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLargeError):
                self.refuse(431, b"Request Header Fields Too Large")
            else:
                self.refuse(400, b"Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.refuse(400, b"Invalid HTTP request received.")
        else:
            # A head spread over several reads: httptools buffers a header until it ends, so count here too.
            if was_in_head and self.in_head:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self.refuse(431, b"Request Header Fields Too Large")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.in_head, self.url, self.headers, self.head_bytes, self.expect = True, b"", [], 0, False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLargeError

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD_BYTES or len(self.headers) >= MAX_HEADERS:
            raise HeadTooLargeError
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.lingering:
            return  # a request pipelined behind one we close after: never answered, as with a plain close
        parser, url = self.parser, self.url
        if url[:1] == b"/" and b"#" not in url:
            raw_path, _, query = url.partition(b"?")
        else:  # absolute-form or odd targets: the full parser (raises HttpParserInvalidURLError -> 400)
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("ascii")  # llhttp admits no bytes above 0x7f in a URL
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        version = parser.get_http_version()
        scope = {
            "type": "http", "asgi": ASGI_VERSION, "http_version": version,
            "method": _METHODS.get(method) or method.decode(),
            "scheme": "http", "path": path, "raw_path": raw_path, "query_string": query, "root_path": "",
            "headers": self.headers, "client": self.client, "server": self.server,
        }
        keep_alive = parser.should_keep_alive() and not self.shared.stopping and not self.upgraded
        cycle = Cycle(self, scope, keep_alive, expect_100=self.expect and version == "1.1", http10=version == "1.0",
                      head_only=method == b"HEAD")
        self.parsing = cycle
        if self.active is None:
            self._start(cycle)
        else:
            self.queue.append(cycle)
            self.pause_reading()  # what arrived in this read is parsed; the rest waits in the socket

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.feed(body)

    def on_message_complete(self) -> None:
        cycle, self.parsing = self.parsing, None
        if cycle is not None:
            cycle.end_of_body()
        if self.active is None:  # the answer went out before the body finished arriving
            self.idle_since = self.loop.time()
            if self.lingering or (self.shared.stopping and not self.queue):
                self.transport.close()

    # used by Cycle and the server
    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def maybe_resume_reading(self) -> None:
        if not self.read_paused or self.closed or self.queue or self.error is not None:
            return
        parsing = self.parsing
        if parsing is None or parsing.complete or parsing.buffered <= HIGH_WATER:
            self.read_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its low-water mark (or the client is gone)."""
        if self.drain_waiter is None or self.drain_waiter.done():
            self.drain_waiter = self.loop.create_future()
        await self.drain_waiter

    def response_done(self, cycle: Cycle) -> None:
        """The last byte of ``cycle``'s response is written: close, or go on to the next request."""
        self.active = None
        if self.closed:
            return
        if not cycle.keep_alive or self.shared.stopping:
            self._close_after_body()
            return
        if self.queue:
            self._start(self.queue.popleft())
        elif self.error is not None:
            self._send_error()
            return
        else:
            self.idle_since = self.loop.time()
        self.maybe_resume_reading()

    def refuse(self, status: int, message: bytes) -> None:
        """Answer a request that cannot be parsed, after the ones before it, and close."""
        self.error = plain_response(status, message)
        self.pause_reading()
        if self.parsing is not None:  # its body will never complete
            self.parsing.disconnect()
        if self.active is None:
            self._send_error()

    def shutdown(self) -> None:
        """Server stopping: an idle connection closes now, a busy one after its current response."""
        if self.active is None and self.parsing is None and not self.queue:
            self.transport.close()
            return
        for cycle in (self.active, *self.queue):
            if cycle is not None:
                cycle.keep_alive = False

    def _close_after_body(self) -> None:
        """Close once the response is out; if the request body is still arriving (say a 413 answered
        from its content-length), end our side and read theirs to its end first: closing a socket with
        unread bytes sends a reset, and the client would see that instead of our answer."""
        if self.parsing is None or self.upgraded or self.error is not None:
            self.transport.close()  # flushes what is buffered, then FIN
            return
        self.lingering, self.idle_since = True, self.loop.time()
        self.transport.write_eof()
        self.maybe_resume_reading()  # closed by on_message_complete, or by the idle timer

    def _send_error(self) -> None:
        assert self.error is not None
        self.queue.clear()
        if not self.closed:
            self.transport.write(self.error)
            self.transport.close()

    def _start(self, cycle: Cycle) -> None:
        self.active = cycle
        task = self.loop.create_task(cycle.run(self.shared.app))
        self.shared.tasks.add(task)
        cycle.task = task

    def _wake_drain(self) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        """One timer per connection, re-armed lazily (not per request): closes it once idle for keep_alive_s.

        A client that sends half a head and stalls counts as idle, so it is dropped too.
        """
        self.timer = None
        if self.closed:
            return
        timeout = self.shared.keep_alive_s
        if (self.active is not None or self.parsing is not None) and not self.lingering:
            self.timer = self.loop.call_later(timeout, self._on_timer)
            return
        remaining = self.idle_since + timeout - self.loop.time()
        if remaining > 0:
            self.timer = self.loop.call_later(remaining, self._on_timer)
            return
        self.transport.close()


def _addr(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None

