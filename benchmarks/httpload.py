"""A small asyncio HTTP/1.1 load client: open-loop constant rate, closed-loop saturation, SSE streams.

It exists for what wrk and vegeta cannot do (per-chunk arrival times of a stream, the event id
header of each answer) and as the fallback when they are not installed (smoke runs, CI). It
runs on uvloop with httptools, the same parser uvicorn uses, over keep-alive connections.

Open loop means requests leave on a fixed schedule whatever the answers do, and latency is
counted from the scheduled send time (as wrk2 does), so a stalled server cannot hide its
queue behind a slowed-down client (coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

CONNECT_TIMEOUT_S = 5.0


@dataclass
class Answer:
    """One response as the client saw it; times are ``time.perf_counter()`` seconds."""

    status: int = 0
    first_byte: float = 0.0
    done: float = 0.0
    event_id: str = ""
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (arrival, SSE events in that read)
    error: str = ""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: Answer | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self._header = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad response: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        self._fail(f"connection lost: {exc or 'closed by server'}")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.answer is not None and name.lower() == b"x-aimeter-event-id":
            self.answer.event_id = value.decode()

    def on_headers_complete(self) -> None:
        if self.answer is not None:
            self.answer.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        if answer is None:
            return
        now = time.perf_counter()
        if not answer.first_byte:
            answer.first_byte = now
        if self.pool.count_events:
            answer.chunks.append((now, body.count(b"data:")))

    def on_message_complete(self) -> None:
        answer, waiter = self.answer, self.waiter
        self.answer = self.waiter = None
        if answer is None or waiter is None:
            return
        answer.done = time.perf_counter()
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
        else:
            self.pool.release(self)
        if not waiter.done():
            waiter.set_result(answer)

    def _fail(self, why: str) -> None:
        answer, waiter = self.answer, self.waiter
        self.answer = self.waiter = None
        if answer is not None and waiter is not None and not waiter.done():
            answer.error, answer.done = why, time.perf_counter()
            waiter.set_result(answer)

    def send(self, payload: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.answer = Answer()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter


class Pool:
    """Keep-alive connections to one host; opens another whenever all are busy."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str], *, count_events: bool = False) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}",
                 "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
        self.payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.count_events = count_events
        self.idle: list[_Conn] = []
        self.all: set[_Conn] = set()

    async def request(self) -> Answer:
        conn = self.idle.pop() if self.idle else await self._open()
        return await conn.send(self.payload)

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(lambda: _Conn(self), self.host, self.port),
                                         CONNECT_TIMEOUT_S)
        self.all.add(conn)
        return conn

    def release(self, conn: _Conn) -> None:
        self.idle.append(conn)

    def forget(self, conn: _Conn) -> None:
        self.all.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in list(self.all):
            if conn.transport is not None:
                conn.transport.close()


async def _timed(pool: Pool, start: float, limit_s: float) -> tuple[float, Answer]:
    try:
        answer = await asyncio.wait_for(pool.request(), limit_s)
    except (TimeoutError, OSError) as exc:
        answer = Answer(error=f"{type(exc).__name__}: {exc}", done=time.perf_counter())
    return start, answer


async def open_loop(pool: Pool, rate: float, seconds: float, limit_s: float = 30.0) -> list[tuple[float, Answer]]:
    """``rate`` requests/s for ``seconds``; each result is (scheduled send time, answer)."""
    count = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.02
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_timed(pool, due, limit_s)))
    return list(await asyncio.gather(*tasks))


async def closed_loop(pool: Pool, concurrency: int, seconds: float,
                      limit_s: float = 30.0) -> list[tuple[float, Answer]]:
    """``concurrency`` workers, each sending its next request when the last answered, for ``seconds``."""
    end = time.perf_counter() + seconds
    results: list[tuple[float, Answer]] = []

    async def worker() -> None:
        while time.perf_counter() < end:
            results.append(await _timed(pool, time.perf_counter(), limit_s))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def fixed_count(pool: Pool, count: int, concurrency: int, deadline_s: float,
                      limit_s: float = 60.0) -> list[tuple[float, Answer]]:
    """Exactly ``count`` requests, ``concurrency`` at a time, stopping early at ``deadline_s``."""
    end = time.perf_counter() + deadline_s
    todo = iter(range(count))
    results: list[tuple[float, Answer]] = []

    async def worker() -> None:
        for _ in todo:
            if time.perf_counter() > end:
                return
            results.append(await _timed(pool, time.perf_counter(), limit_s))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def run(coro):  # noqa: ANN001, ANN201 - thin wrapper over uvloop.run
    """Run one load coroutine on uvloop (falls back to asyncio where uvloop is missing)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
