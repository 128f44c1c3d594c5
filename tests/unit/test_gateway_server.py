"""The gateway's own HTTP/1.1 server on real loopback sockets: raw bytes for the edge cases, httpx for the rest.

The server runs on uvloop in a thread (as in production, minus the process); the test thread is the client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx2 as httpx
import pytest

from aimeter.gateway.server import StartupError
from aimeter.gateway.server_conn import Limits
from tests.support.http_server import App, closed, connect, read_response, serving

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
