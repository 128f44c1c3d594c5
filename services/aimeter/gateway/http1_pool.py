"""The upstream connection pool: keep-alive connections per origin, a cap, and the stale-connection retry.

Policy lives here, the wire in ``http1``: a request takes the most recently used idle connection of
its origin (warm, least likely to have been closed by the upstream), else opens one while the origin
is under its cap, else waits for one within the connect timeout. When a *reused* connection turns out
to have been closed before any byte of the answer (the upstream's keep-alive timer raced our request),
the request is sent once more on a fresh connection: nothing of it can have been answered.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Mapping

from aimeter.gateway.http1 import (
    MAX_BODY,
    Connection,
    Origin,
    Response,
    StaleConnectionError,
    UpstreamError,
    UpstreamTimeoutError,
    request_head,
    split_url,
)


class _Host:
    __slots__ = ("count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[Connection] = []  # most recently used last: the warmest connection is reused first
        self.count = 0  # open connections, idle or busy
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()


class Pool:
    """Keep-alive connections per origin, at most ``max_per_origin`` open; callers beyond it wait for one."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, connect_timeout: float = 10.0,
                 read_timeout: float = 600.0, max_per_origin: int = 1024, idle_ttl: float = 15.0,
                 max_body: int = MAX_BODY) -> None:
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_per_origin, self.idle_ttl = max_per_origin, idle_ttl
        self.max_body = max_body  # see http1.Response: a whole answer held, or a compressed one inflated
        self._hosts: dict[Origin, _Host] = {}
        self._closed = False

    async def request(self, url: str, headers: Mapping[str, str], body: bytes, method: str = "POST") -> Response:
        """Send one request; returns once the response head is in. The caller must ``close()`` the Response."""
        origin, target = split_url(url)
        payload = request_head(method, target, origin, headers, len(body)) + body
        host = self._hosts.get(origin) or self._hosts.setdefault(origin, _Host())
        conn = self._idle(host) or await self._acquire(origin, host, fresh=False)
        try:
            return await self._send(conn, payload)
        except StaleConnectionError:
            return await self._send(await self._acquire(origin, host, fresh=True), payload)

    async def close(self) -> None:
        self._closed = True
        for host in self._hosts.values():
            for conn in host.idle:
                conn.abort()
            host.idle.clear()

    @staticmethod
    async def _send(conn: Connection, payload: bytes) -> Response:
        try:
            return await conn.send(payload)
        except asyncio.CancelledError:
            conn.abort()  # an answer nobody waits for would leave the connection half-read
            raise

    def _idle(self, host: _Host) -> Connection | None:
        while host.idle:
            conn = host.idle.pop()
            fresh = conn.loop.time() - conn.idle_since < self.idle_ttl
            if conn.transport is not None and not conn.transport.is_closing() and fresh:
                conn.reused = True
                return conn
            conn.abort()
        return None

    async def _acquire(self, origin: Origin, host: _Host, *, fresh: bool) -> Connection:
        """A connection: idle if allowed, else a new one once the origin is under its cap."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                while host.count >= self.max_per_origin:
                    if not fresh and (conn := self._idle(host)) is not None:
                        return conn
                    if fresh and host.idle:
                        self.forget(victim := host.idle.pop(0))  # make room: the oldest idle one goes
                        victim.abort()
                        continue
                    await self._slot(host)
                return await self._connect(origin, host)
        except TimeoutError:
            raise UpstreamTimeoutError(f"no connection within {self.connect_timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS verification (ssl.SSLError is an OSError)
            # The reason only: the client sees this message, and upstream addresses are not its business.
            raise UpstreamError(f"cannot connect: {getattr(exc, 'reason', None) or exc.strerror or type(exc).__name__}",
                                ) from None

    async def _slot(self, host: _Host) -> None:
        waiter = asyncio.get_running_loop().create_future()
        host.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake(host)  # we were handed the slot as we gave up: pass it on
            raise

    async def _connect(self, origin: Origin, host: _Host) -> Connection:
        loop = asyncio.get_running_loop()
        made: list[Connection] = []

        def factory() -> Connection:
            made.append(Connection(self, origin, loop))
            return made[-1]

        host.count += 1
        try:
            tls = self.ssl_context if origin.tls else None
            _, conn = await loop.create_connection(factory, origin.host, origin.port, ssl=tls,
                                                   server_hostname=origin.host if tls else None)
        except BaseException:
            if made and made[0].transport is not None:
                made[0].abort()  # connection_lost will free the slot
            else:
                host.count -= 1
                self._wake(host)
            raise
        return conn

    def release(self, conn: Connection) -> None:
        if self._closed:
            conn.abort()
            return
        conn.idle_since = conn.loop.time()
        host = self._hosts[conn.origin]
        host.idle.append(conn)
        self._wake(host)

    def forget(self, conn: Connection) -> None:
        """``conn`` is closed (or about to be): free its slot."""
        host = self._hosts.get(conn.origin)
        if host is None or not conn.counted:
            return
        conn.counted = False
        host.count -= 1
        if conn in host.idle:
            host.idle.remove(conn)
        self._wake(host)

    @staticmethod
    def _wake(host: _Host) -> None:
        while host.waiters:
            waiter = host.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
