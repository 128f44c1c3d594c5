"""One client connection of the gateway's HTTP/1.1 server, and the ASGI receive/send of one request.

uvicorn's protocol layer was a large share of the gateway's CPU at saturation (docs/decisions.md) and wrote
a response's head and body in two socket writes. The gateway serves one raw ASGI app on HTTP/1.1 only, so
this is the small part of a server it needs: httptools (llhttp) parses, a ``Cycle`` per request (slots, no
per-request closures) carries the scope, the request body and the response state, and the head is held back
until the first body chunk so a small response leaves in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import unquote

import httptools

from aimeter.gateway.server_cycle import HIGH_WATER, Cycle, plain_response

log = logging.getLogger("aimeter.gateway.server")

App = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; beyond this: 431
MAX_HEADERS = 256
BODY_BYTES_PER_S = 64 * 1024  # a body arriving at least this fast is never cut by the body deadline
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
_METHODS = {m: m.decode() for m in (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")}


class HeadTooLargeError(Exception):
    """Raised inside a parser callback to stop parsing; answered with 431."""


class Limits:
    """The server's own limits on what a client may hold: they are the server's, a client cannot raise them.

    ``head_s``: a request head must be complete this long after its first byte (a new connection: after it
    opened); ``body_s``: a request body must be complete this long after its head, plus one second per
    ``BODY_BYTES_PER_S`` received (a big upload on a slow link goes on, one byte now and then does not);
    ``per_peer``: open connections one client address may hold (0: no cap). Each is checked where it
    changes (a connection opens, a read leaves a request incomplete), never per request on the common path.
    """

    __slots__ = ("body_s", "head_s", "per_peer")

    def __init__(self, head_s: float = 10.0, body_s: float = 60.0, per_peer: int = 1024) -> None:
        self.head_s, self.body_s, self.per_peer = head_s, body_s, per_peer


class Shared:
    """What every connection of one server shares: the app, settings, and the live connections and tasks."""

    __slots__ = ("app", "connections", "keep_alive_s", "limits", "loop", "peers", "stopping", "tasks")

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop, keep_alive_s: float,
                 limits: Limits | None = None) -> None:
        self.app, self.loop, self.keep_alive_s = app, loop, keep_alive_s
        self.limits = limits or Limits()
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.peers: dict[str, int] = {}  # open connections per client address, while a cap is set
        self.stopping = False


class Connection(asyncio.Protocol):
    """Parses requests in order and serves them one at a time; pipelined ones wait in ``queue``."""

    __slots__ = ("active", "client", "closed", "deadline", "drain_waiter", "error", "expect", "head_bytes", "headers",
                 "idle_since", "in_head", "lingering", "loop", "parser", "parsing", "peer", "queue", "read_paused",
                 "server", "shared", "timer", "transport", "upgraded", "url", "watched", "write_paused")

    def __init__(self, shared: Shared) -> None:
        self.shared, self.loop = shared, shared.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport = cast(asyncio.Transport, None)  # set in connection_made, before any other callback
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
        self.deadline = 0.0  # when the head or body under way must be complete (see _watch)
        self.watched: Cycle | None = None  # the request whose body ``deadline`` is for
        self.peer: str | None = None  # counted in shared.peers (None: no cap, or refused)

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # TCP_NODELAY: uvloop and asyncio set it already
        self.client = _addr(transport.get_extra_info("peername"))
        self.server = _addr(transport.get_extra_info("sockname"))
        shared = self.shared
        limits = shared.limits
        if limits.per_peer and not self._admit(shared, limits.per_peer):
            return
        shared.connections.add(self)
        # A new connection gets head_s (not keep_alive_s) for its first request: idle_since is set so that
        # the idle rule (idle_since + keep_alive_s) falls due at now + head_s.
        self.idle_since = self.loop.time() + limits.head_s - shared.keep_alive_s
        self.timer = self.loop.call_later(limits.head_s, self._on_timer)

    def _admit(self, shared: Shared, cap: int) -> bool:
        """Count this connection against its client address; the one over the cap is answered 503 and closed."""
        peer = self.client[0] if self.client is not None else ""
        held = shared.peers.get(peer, 0)
        if held >= cap:
            log.info("refusing a connection from %s: it holds %d open connections already (the cap)", peer, held)
            self.error = plain_response(503, b"Too many open connections from your address; close some and retry.")
            self.transport.write(self.error)
            self.transport.close()
            return False
        shared.peers[peer] = held + 1
        self.peer = peer
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.shared.connections.discard(self)
        if self.peer is not None:
            peers, peer = self.shared.peers, self.peer
            self.peer = None
            if peers.get(peer, 0) > 1:
                peers[peer] -= 1
            else:
                peers.pop(peer, None)
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
            if self.in_head or self.parsing is not None:  # this read left a request incomplete: rare
                self._incomplete(was_in_head, len(data))

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
        self.maybe_resume_reading()  # closed by on_message_complete, or by the timer: see _linger_s
        due = self.idle_since + self._linger_s()
        if self.timer is None or self.timer.when() > due:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_later(due - self.idle_since, self._on_timer)

    def _linger_s(self) -> float:
        """How long an answered request's unread body may keep its connection (a client answered 401 or 429
        that never sends the body it declared must not hold the connection for a whole keep-alive)."""
        return min(self.shared.keep_alive_s, self.shared.limits.body_s)

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

    def _incomplete(self, was_in_head: bool, size: int) -> None:
        """A read ended inside a head or a body: count the head's bytes, start the head's or body's deadline
        (once each), and make sure the connection's timer fires by then. Requests that arrive in one read
        never get here."""
        limits, now = self.shared.limits, self.loop.time()
        if self.in_head:
            if was_in_head:
                # A head spread over several reads: httptools buffers a header until it ends, so count here too.
                self.head_bytes += size
                if self.head_bytes > MAX_HEAD_BYTES:
                    self.refuse(431, b"Request Header Fields Too Large")
                return  # its deadline runs already
            self.deadline = now + limits.head_s
        elif self.parsing is self.watched:
            self.deadline += size / BODY_BYTES_PER_S  # progress buys time; a dribble buys next to none
            return
        else:
            self.watched = self.parsing
            self.deadline = now + limits.body_s
        timer = self.timer
        if timer is None or timer.when() > self.deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_later(self.deadline - now, self._on_timer)

    def _on_timer(self) -> None:
        """One timer per connection, re-armed lazily (not per request). It closes a connection idle for
        keep_alive_s (a new one: head_s), and answers 408 to a head or body not complete by its deadline."""
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        if self.lingering:
            due = self.idle_since + self._linger_s()
        elif self.in_head or (self.parsing is not None and self.parsing is self.watched):
            due = self.deadline
            if due <= now:
                if self.in_head or not self.read_paused:
                    self._timed_out()
                    return
                # We stopped reading (a pipelined request waits its turn): the client is not late.
                self.deadline = due = now + self.shared.limits.body_s
        elif self.active is not None or self.parsing is not None:
            due = now + self.shared.keep_alive_s
        else:
            due = self.idle_since + self.shared.keep_alive_s
        if due > now:
            self.timer = self.loop.call_later(due - now, self._on_timer)
            return
        self.transport.close()

    def _timed_out(self) -> None:
        if not self.in_head and self.parsing is not None and self.parsing.complete:
            self.transport.close()  # answered already (401, 429, 413 before the body came): no second answer
            return
        part = "head" if self.in_head else "body"
        limit = self.shared.limits.head_s if self.in_head else self.shared.limits.body_s
        log.info("answering 408 to %s: request %s not complete within %g s", _peer(self.client), part, limit)
        self.refuse(408, b"Request Timeout: the request %s did not arrive within %g s" % (part.encode(), limit))


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client is not None else "a client"


def _addr(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None

