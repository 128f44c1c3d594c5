"""The gateway HTTP/1.1 server's test harness, shared by its unit tests and the integration tests that need a
real server: a small ASGI app whose routes each provoke one behaviour, the server run on uvloop in a thread
(``serving``), and a raw-socket client (``connect``, ``read_response``, ``closed``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvloop

from aimeter.gateway.server import Server

Scope = dict[str, Any]


class App:
    """A small ASGI app whose routes each provoke one behaviour; it records what it saw."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.seen: list[Scope] = []
        self.chunk_sizes: list[int] = []
        self.disconnected = threading.Event()
        self.fail_startup = False
        self.sent = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if self.fail_startup:
                        await send({"type": "lifespan.startup.failed", "message": "no upstream pool"})
                        return
                    self.lifespan.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.lifespan.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.seen.append(scope)
        await getattr(self, "r_" + scope["path"].strip("/").split("/")[0].replace("-", "_") or "r_echo")(
            scope, receive, send)

    async def r_echo(self, scope: Scope, receive: Any, send: Any) -> None:
        body, calls = b"", 0
        while True:
            message = await receive()
            calls += 1
            if message["type"] != "http.request":
                return
            body += message["body"]
            self.chunk_sizes.append(len(message["body"]))
            if not message["more_body"]:
                break
            if b"slow" in scope["query_string"]:
                await asyncio.sleep(0.02)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"x-calls", str(calls).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def r_slow(self, scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(float(scope["query_string"].decode() or 0.3))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    async def r_stream(self, scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(0.4)
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def r_until_gone(self, scope: Scope, receive: Any, send: Any) -> None:
        await receive()  # the (empty) body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        if (await receive())["type"] == "http.disconnect":
            self.disconnected.set()

    async def r_firehose(self, scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        for _ in range(1000):  # 64 MiB if nothing held it back
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.sent += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    async def r_reject(self, scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})

    async def r_boom(self, scope: Scope, receive: Any, send: Any) -> None:
        raise ValueError("app bug")

    async def r_boom_late(self, scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("app bug mid-stream")

    async def r_nothing(self, scope: Scope, receive: Any, send: Any) -> None:
        return


@contextlib.contextmanager
def serving(app: App, **options: Any) -> Iterator[tuple[Server, int]]:
    started = threading.Event()
    server = Server(app, "127.0.0.1", 0, install_signals=False, on_started=started.set, **options)
    failure: list[BaseException] = []

    def main() -> None:
        try:
            uvloop.run(server.serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which re-raises it
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(10)
    if failure:
        raise failure[0]
    try:
        yield server, server.sockets[0].getsockname()[1]
    finally:
        server.stop()
        thread.join(15)
        assert not thread.is_alive()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response from ``sock`` (content-length, chunked or to EOF); leftover bytes stay in ``buf``."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed mid-head: {bytes(buf)!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines[1:])}
    buf[:] = rest
    if b"content-length" in headers:
        size = int(headers[b"content-length"])
        while len(buf) < size:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed mid-body")
            buf += data
        body = bytes(buf[:size])
        del buf[:size]
        return status, headers, body
    if headers.get(b"transfer-encoding") == b"chunked":
        parts: list[bytes] = []
        while True:
            while b"\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed before the last chunk")
                buf += data
            size_line, _, _ = bytes(buf).partition(b"\r\n")
            size = int(size_line, 16)
            while len(buf) < len(size_line) + 2 + size + 2:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed mid-chunk")
                buf += data
            parts.append(bytes(buf[len(size_line) + 2:len(size_line) + 2 + size]))
            del buf[:len(size_line) + 2 + size + 2]
            if size == 0:
                return status, headers, b"".join(parts)
    while data := sock.recv(65536):
        buf += data
    body = bytes(buf)
    buf.clear()
    return status, headers, body


def closed(sock: socket.socket, timeout: float = 2.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
