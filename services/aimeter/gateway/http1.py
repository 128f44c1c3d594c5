"""The gateway's HTTP/1.1 upstream client, on asyncio.Protocol and httptools (llhttp): one connection.

aiohttp was a large share of the gateway's CPU per request (docs/decisions.md): a session, request and
response object graph, multidicts, payload wrappers and timers per call. The gateway needs far less: POST
bytes to a few fixed origins and hand the answer back as bytes. Here a call is one write, one parse of what
arrives and one future; the body is kept on the Response, so a connection goes back to its pool
(``http1_pool``) the moment its message is complete.

A connection does TLS through asyncio's ``ssl=``; Content-Length, chunked and close-delimited
bodies; gzip/deflate if an upstream sends them although we ask for identity; streamed bodies with
backpressure; a read timeout; and it tells a stale keep-alive connection from a broken one.
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Mapping
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # body bytes held for a lagging reader before we stop reading the socket
MAX_BODY = 64 * 1024 * 1024  # default cap on a whole answer held, and on the bytes a gzip/deflate body inflates to
_DECODED = {b"gzip", b"x-gzip", b"deflate"}


class UpstreamError(Exception):
    """The upstream could not be reached or broke the HTTP exchange; the message says how."""


class UpstreamTimeoutError(UpstreamError, TimeoutError):
    """No connection, no free pool slot, or no next byte within the configured time."""


class UpstreamTooLargeError(UpstreamError):
    """The answer (held whole, or inflated from gzip/deflate) grew past the pool's ``max_body``."""


class StaleConnectionError(UpstreamError):
    """A reused keep-alive connection was closed before any byte of the answer arrived."""


class Owner(Protocol):
    """What a connection needs from its pool."""

    read_timeout: float
    max_body: int

    def release(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class Origin:
    """scheme://host:port; interned (one object per origin), so it keys the pool by identity."""

    __slots__ = ("host", "host_header", "port", "tls")

    def __init__(self, host: str, port: int, tls: bool, host_header: str) -> None:
        self.host, self.port, self.tls, self.host_header = host, port, tls, host_header


_ORIGINS: dict[tuple[bool, str, int], Origin] = {}


@functools.lru_cache(maxsize=4096)  # upstream URLs come from the config: a small, fixed set
def split_url(url: str) -> tuple[Origin, str]:
    """(origin, request target) of an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UpstreamError(f"unsupported upstream URL {url!r}: need http:// or https:// and a host")
    tls = parts.scheme == "https"
    key = (tls, parts.hostname, parts.port or (443 if tls else 80))
    origin = _ORIGINS.setdefault(key, Origin(key[1], key[2], tls, parts.netloc.rpartition("@")[2]))
    return origin, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def request_head(method: str, target: str, origin: Origin, headers: Mapping[str, str], length: int) -> bytes:
    """The request line and headers; refuses a CR or LF smuggled into any value (header injection)."""
    head = "".join([f"{method} {target} HTTP/1.1\r\nhost: {origin.host_header}\r\n",
                    *[f"{name}: {value}\r\n" for name, value in headers.items()],
                    f"accept-encoding: identity\r\ncontent-length: {length}\r\n\r\n"])
    lines = len(headers) + 5
    if head.count("\n") != lines or head.count("\r") != lines:
        raise UpstreamError("refusing to send an upstream request with a line break inside a header or URL")
    try:
        return head.encode("latin-1")
    except UnicodeEncodeError:
        raise UpstreamError("refusing to send an upstream header that is not latin-1") from None


class Response:
    """Status and headers (names lower-cased) of an answer; the body is read whole or chunk by chunk."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_decoded", "_decoder", "_done", "_error", "_limit", "_paused",
                 "_waiter", "_whole", "headers", "status")

    def __init__(self, conn: Connection, status: int, headers: list[tuple[bytes, bytes]], decoder: Any,
                 limit: int = MAX_BODY) -> None:
        self.status, self.headers, self._conn, self._decoder = status, headers, conn, decoder
        self._limit = limit  # most bytes held by read(), and most bytes a compressed body may inflate to
        self._chunks: list[bytes] = []
        self._buffered = self._decoded = 0
        self._done = self._paused = self._whole = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read(self) -> bytes:
        """The whole body (never paused: the reader takes everything)."""
        self._whole = True
        self._resume()
        while not self._done:
            await self._wait()
        if self._error is not None:
            raise self._error
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)

    async def next_chunk(self) -> bytes:
        """Everything that arrived since the last call, waiting for at least one byte; b"" at the end."""
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            await self._wait()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        self._resume()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        """Done with it: a body not read to its end makes the connection unusable, so it is dropped."""
        if not self._done:
            self._done = True
            self._conn.abort()

    def _wait(self) -> asyncio.Future[None]:
        self._waiter = self._conn.loop.create_future()
        return self._waiter

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._conn.resume()

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            # Never more than the cap out of one call, whatever the ratio (a 261 KB gzip bomb inflated to 1.4 GB).
            room = self._limit - self._decoded
            data = self._decoder.decompress(data, room + 1)
            self._decoded += len(data)
            if len(data) > room:
                self._too_large(f"the upstream's compressed answer inflates past {self._limit} bytes")
                return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > HIGH_WATER:  # checks only past the high-water mark: small answers pay nothing
                if not self._whole:
                    if not self._paused:
                        self._paused = True
                        self._conn.pause()
                elif self._buffered > self._limit:
                    self._too_large(f"the upstream's answer is longer than {self._limit} bytes")
                    return
            self._wake()

    def _too_large(self, message: str) -> None:
        self._chunks, self._buffered = [], 0
        self._conn._fail(UpstreamTooLargeError(message))
        self._conn.abort()

    def _finish(self, error: UpstreamError | None = None) -> None:
        if self._done:
            return
        if error is None and self._decoder is not None and (tail := self._decoder.flush()):
            self._decoded += len(tail)
            if self._decoded > self._limit:
                error = UpstreamTooLargeError(f"the upstream's compressed answer inflates past {self._limit} bytes")
            else:
                self._chunks.append(tail)
        self._done, self._error = True, error
        self._resume()  # the last bytes may have paused a connection that is about to be reused
        self._wake()


class Connection(asyncio.Protocol):
    """One upstream connection; at most one request in flight (no pipelining)."""

    def __init__(self, pool: Owner, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.origin, self.loop = pool, origin, loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None  # until the head is in
        self.response: Response | None = None  # from the head to the end of the body
        self.headers: list[tuple[bytes, bytes]] = []
        self.encoding = b""
        self.busy = self.reused = self.got_bytes = self.paused = self.lost = self.framed = self.interim = False
        self.counted = True
        self.last = self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport

    def data_received(self, data: bytes) -> None:
        self.last = self.loop.time()
        self.got_bytes = True
        if not self.busy:  # bytes nobody asked for: this connection cannot be trusted any more
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed upstream response: {exc.__context__ or exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        if not self.busy:
            return
        if self.response is not None and not self.framed and exc is None:
            self.on_message_complete()  # a body without length or chunking ends where the connection does
        elif self.reused and not self.got_bytes:
            self._fail(StaleConnectionError("reused keep-alive connection was closed before the answer"))
        elif self.response is None:
            self._fail(UpstreamError("connection closed before a complete response head"))
        else:
            self._fail(UpstreamError(f"connection dropped mid-body ({exc or 'closed by the upstream'})"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if not self.busy:  # an answer to no request (bytes after the last one): stop parsing, drop the connection
            raise UpstreamError("unsolicited response")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in {b"content-length", b"transfer-encoding"}:
            self.framed = True
        elif name == b"content-encoding" and value.lower() in _DECODED:
            self.encoding = value.lower()
            return  # we hand out the decoded body, so the header no longer describes it
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and friends: an interim head, the real one follows
            self.headers, self.framed, self.encoding, self.interim = [], False, b"", True
            return
        decoder = zlib.decompressobj(47) if self.encoding else None  # 47: gzip or zlib header, auto-detected
        self.response = Response(self, status, self.headers, decoder, self.pool.max_body)
        self.headers, self.encoding = [], b""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.response)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        response, self.response, self.busy = self.response, None, False
        self._stop_timer()
        keep = not self.lost and self.parser.should_keep_alive()
        self.framed = False
        if response is not None:
            response._finish()
        if keep:
            self.pool.release(self)
        elif not self.lost and self.transport is not None:
            self.transport.close()  # the upstream asked to close (or the body ran to EOF): a clean FIN

    # used by Pool and Response
    def send(self, payload: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.busy, self.got_bytes = True, False
        self.waiter = waiter = self.loop.create_future()
        self.last = self.loop.time()
        self.timer = self.loop.call_later(self.pool.read_timeout, self._on_timer)
        self.transport.write(payload)
        return waiter

    def pause(self) -> None:
        self.paused = True
        if not self.lost and self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        self.last = self.loop.time()  # time the reader kept us paused is not the upstream's silence
        if not self.lost and self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.busy, self.waiter, self.response = False, None, None
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: UpstreamError) -> None:
        waiter, response = self.waiter, self.response
        self.busy, self.waiter, self.response = False, None, None
        self._stop_timer()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        elif response is not None:
            response._finish(error)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        """One timer per request, re-armed from the last byte's time rather than reset on every byte."""
        if not self.busy:
            self.timer = None
            return
        timeout = self.pool.read_timeout
        silent = self.loop.time() - self.last
        if self.paused or silent < timeout:
            self.timer = self.loop.call_later(timeout if self.paused else timeout - silent, self._on_timer)
            return
        self.timer = None
        self._fail(UpstreamTimeoutError(f"no byte from the upstream for {timeout:g} s"))
        self.abort()
