"""The gateway's own HTTP/1.1 server on real loopback sockets: raw bytes for the edge cases, httpx for the rest.

The server runs on uvloop in a thread (as in production, minus the process); the test thread is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
import uvloop

from aimeter.gateway.server import Server, StartupError
from aimeter.gateway.server_conn import Limits

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


POST = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"


def test_keep_alive_reuses_one_connection_and_answers_in_one_piece() -> None:
    app = App()
    with serving(app) as (_, port), connect(port) as sock:
        buf = bytearray()
        for _ in range(3):
            sock.sendall(POST)
            status, headers, body = read_response(sock, buf)
            assert (status, body, headers[b"content-length"]) == (200, b"hello", b"5")
            assert b"server" not in headers
            assert b"date" not in headers
        assert not closed(sock, 0.2)
    assert app.lifespan == ["startup", "shutdown"]


def test_scope_matches_what_uvicorn_gave_the_app() -> None:
    app = App()
    with serving(app) as (_, port), connect(port) as sock:
        sock.sendall(b"POST /echo/a%20b?key=v%20w HTTP/1.1\r\nHost: x\r\nX-Team: Ops\r\ncontent-length: 0\r\n\r\n")
        assert read_response(sock, bytearray())[0] == 200
    scope = app.seen[0]
    assert scope["path"] == "/echo/a b"
    assert scope["raw_path"] == b"/echo/a%20b"
    assert scope["query_string"] == b"key=v%20w"
    assert scope["method"] == "POST"
    assert scope["http_version"] == "1.1"
    assert (b"x-team", b"Ops") in scope["headers"]
    assert scope["root_path"] == ""
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"][1] == port
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}


def test_pipelined_requests_are_answered_in_order() -> None:
    with serving(App()) as (_, port), connect(port) as sock:
        sock.sendall(b"GET /slow/1?0.3 HTTP/1.1\r\nhost: x\r\n\r\nGET /slow/2?0 HTTP/1.1\r\nhost: x\r\n\r\n" + POST)
        buf = bytearray()
        assert [read_response(sock, buf)[2] for _ in range(3)] == [b"/slow/1", b"/slow/2", b"hello"]


def test_http10_closes_unless_keep_alive_is_asked_for() -> None:
    with serving(App()) as (_, port):
        with connect(port) as sock:
            sock.sendall(b"POST /echo HTTP/1.0\r\ncontent-length: 2\r\n\r\nhi")
            status, headers, body = read_response(sock, bytearray())
            assert (status, body, headers[b"connection"]) == (200, b"hi", b"close")
            assert closed(sock)
        with connect(port) as sock:
            buf = bytearray()
            for _ in range(2):
                sock.sendall(b"POST /echo HTTP/1.0\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi")
                status, headers, body = read_response(sock, buf)
                assert (status, body, headers[b"connection"]) == (200, b"hi", b"keep-alive")
        with connect(port) as sock:  # HTTP/1.1 with Connection: close
            sock.sendall(b"POST /echo HTTP/1.1\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi")
            assert read_response(sock, bytearray())[1][b"connection"] == b"close"
            assert closed(sock)


def test_chunked_request_body_arrives_whole() -> None:
    with serving(App()) as (_, port), connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.05)
        sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
        assert read_response(sock, bytearray())[2] == b"hello world"


def test_expect_100_continue_is_answered_when_the_app_reads() -> None:
    with serving(App()) as (_, port), connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert read_response(sock, bytearray())[2] == b"hello"


def test_large_body_is_flow_controlled_for_a_slow_reader() -> None:
    app = App()
    size = 8 * 1024 * 1024
    with serving(app) as (_, port), connect(port) as sock:
        sock.sendall(b"POST /echo?slow HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
        status, _, body = read_response(sock, bytearray())
    assert status == 200
    assert len(body) == size
    # Unpaused, a reader sleeping 20 ms per message would get megabytes per message; paused at 64 KiB,
    # what a message carries is bounded by the high-water mark plus one socket read.
    assert len(app.chunk_sizes) > 20
    assert max(app.chunk_sizes) < 1024 * 1024


def test_streamed_response_arrives_chunk_by_chunk() -> None:
    with serving(App()) as (_, port), httpx.Client(timeout=5) as client:
        started = time.monotonic()
        with client.stream("GET", f"http://127.0.0.1:{port}/stream") as resp:
            assert resp.headers["transfer-encoding"] == "chunked"
            arrivals = [(time.monotonic() - started, chunk) for chunk in resp.iter_raw()]
    assert [c for _, c in arrivals] == [b"data: 1\n\n", b"data: 2\n\n"]
    assert arrivals[0][0] < 0.2 < arrivals[1][0]  # the first was not held back until the app sent the last


def test_client_disconnect_mid_stream_reaches_receive() -> None:
    app = App()
    with serving(app) as (_, port):
        with connect(port) as sock:
            sock.sendall(b"GET /until-gone HTTP/1.1\r\nhost: x\r\n\r\n")
            assert b"data: 1" in sock.recv(65536)
        assert app.disconnected.wait(3)


def test_malformed_request_gets_400_and_close() -> None:
    with serving(App()) as (_, port):
        for bad in (b"BLAH\r\n\r\n", b"GET /x HTTP/1.1\r\nbad header\r\n\r\n",
                    b"GET /x HTTP/1.1\r\ncontent-length: z\r\n\r\n"):
            with connect(port) as sock:
                sock.sendall(bad)
                status, headers, body = read_response(sock, bytearray())
                assert (status, headers[b"connection"]) == (400, b"close")
                assert body
                assert closed(sock)


def test_oversized_headers_get_431() -> None:
    with serving(App()) as (_, port):
        for head in (b"GET / HTTP/1.1\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n",
                     b"GET / HTTP/1.1\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(300)) + b"\r\n"):
            with connect(port) as sock:
                sock.sendall(head)
                assert read_response(sock, bytearray())[0] == 431
                assert closed(sock)
        with connect(port) as sock:  # a head trickled in pieces is capped too
            sock.sendall(b"GET / HTTP/1.1\r\nx-big: ")
            with contextlib.suppress(ConnectionError):
                for _ in range(20):
                    sock.sendall(b"a" * 8192)
                    time.sleep(0.005)
            assert read_response(sock, bytearray())[0] == 431


def test_app_exception_before_start_is_500_after_start_a_cut(caplog: pytest.LogCaptureFixture) -> None:
    with serving(App()) as (_, port):
        for path in (b"/boom", b"/nothing"):
            with connect(port) as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
                status, headers, _ = read_response(sock, bytearray())
                assert (status, headers[b"connection"]) == (500, b"close")
                assert closed(sock)
        with connect(port) as sock:
            sock.sendall(b"GET /boom-late HTTP/1.1\r\nhost: x\r\n\r\n")
            with pytest.raises(ConnectionError):  # never a fake-complete chunked body
                read_response(sock, bytearray())
        with connect(port) as sock:  # and the server still serves
            sock.sendall(POST)
            assert read_response(sock, bytearray())[2] == b"hello"
    assert "app bug" in caplog.text


def test_head_response_has_no_body() -> None:
    with serving(App()) as (_, port), connect(port) as sock:
        buf = bytearray()
        sock.sendall(b"HEAD /slow?0 HTTP/1.1\r\nhost: x\r\n\r\n" + POST)
        sock.settimeout(2)
        time.sleep(0.2)
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.count(b"HTTP/1.1") == 2
        buf += data[data.index(b"HTTP/1.1", 5):]
        assert read_response(sock, buf)[2] == b"hello"


def test_graceful_shutdown_lets_the_in_flight_request_finish() -> None:
    app = App()
    with serving(app) as (server, port), connect(port) as idle:
        result: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: result.append(httpx.get(f"http://127.0.0.1:{port}/slow?0.5")))
        worker.start()
        time.sleep(0.2)
        server.stop()
        assert closed(idle)  # an idle keep-alive connection is closed at once
        worker.join(5)
        assert result[0].status_code == 200
        assert result[0].headers["connection"] == "close"
        time.sleep(0.1)
        with pytest.raises(OSError):
            connect(port)
    assert app.lifespan == ["startup", "shutdown"]


def test_idle_keep_alive_and_stalled_heads_time_out() -> None:
    with serving(App(), keep_alive_s=0.2, limits=Limits(head_s=0.3)) as (_, port):
        with connect(port) as sock:
            sock.sendall(POST)
            assert read_response(sock, bytearray())[2] == b"hello"
            time.sleep(0.05)
            sock.sendall(POST)  # activity keeps it open beyond one timeout in total
            assert read_response(sock, bytearray())[2] == b"hello"
            started = time.monotonic()
            assert closed(sock)
            assert 0.1 < time.monotonic() - started < 1.0
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost:")
            assert read_response(sock, bytearray())[0] == 408  # the head deadline (Limits.head_s)
            assert closed(sock)


def test_startup_failure_stops_the_server() -> None:
    app = App()
    app.fail_startup = True
    with pytest.raises(StartupError, match="no upstream pool"), serving(app):
        pass


def test_httpx_client_against_the_server() -> None:
    with serving(App()) as (_, port), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(20):
            resp = client.post("/echo", content=b"x" * i * 1000)
            assert resp.status_code == 200
            assert len(resp.content) == i * 1000



def test_slow_reader_holds_the_app_back() -> None:
    app = App()
    with serving(app) as (_, port), connect(port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /firehose HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(0.5)
        held = app.sent  # what the app got rid of while the client read nothing
        assert held < 16 * 1024 * 1024
        _, _, body = read_response(sock, bytearray())
        assert len(body) == 1000 * 65536 == app.sent


def test_upgrade_request_is_served_as_plain_http_then_closed() -> None:
    with serving(App()) as (_, port), connect(port) as sock:
        sock.sendall(b"GET /slow?0 HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        status, headers, _ = read_response(sock, bytearray())
        assert (status, headers[b"connection"]) == (200, b"close")
        assert closed(sock)


def test_malformed_body_mid_request_gets_400_and_close(caplog: pytest.LogCaptureFixture) -> None:
    with serving(App()) as (_, port), connect(port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.05)
        sock.sendall(b"ZZZ\r\n")
        status, headers, _ = read_response(sock, bytearray())
        assert (status, headers[b"connection"]) == (400, b"close")
        assert closed(sock)
    assert "without completing" not in caplog.text


def test_answer_before_the_body_then_close_lets_the_client_finish_sending() -> None:
    size = 4 * 1024 * 1024
    with serving(App()) as (_, port), connect(port) as sock:
        # The app answers from the head alone; the client is still uploading when the answer is done.
        sock.sendall(b"POST /reject HTTP/1.1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % size
                     + b"x" * size)  # a reset would make this raise
        status, _, body = read_response(sock, bytearray())
        assert (status, body) == (413, b"no")
        assert closed(sock)
