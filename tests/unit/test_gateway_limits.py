"""The gateway's limits below the HTTP layer: a stream event's size and cost, and a compressed answer's size.

An unterminated SSE event of 100 MB was copied again on every read (18.5 s of event loop, 40 s in the
attack test before the fix); a 261 KB gzip answer inflated to 1.4 GB.
"""

from __future__ import annotations

import asyncio
import time
import zlib

import orjson
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from aimeter.events import UsageSource
from aimeter.gateway.http1 import UpstreamTooLargeError
from aimeter.gateway.http1_pool import Pool
from aimeter.gateway.providers.openai import OpenAIChatStream
from aimeter.gateway.server_conn import BODY_BYTES_PER_S, Limits
from aimeter.gateway.sse import SHORT_EVENT_BYTES, StreamScanner
from tests.support.http_server import App, connect, read_response, serving
from tests.unit.test_sse import USAGE, chunk

PIECE = 64 * 1024


def test_an_unterminated_event_costs_linear_time() -> None:
    scanner = StreamScanner(OpenAIChatStream())
    piece = b"a" * PIECE
    started = time.process_time()
    scanner.feed(b'data: {"choices":[{"delta":{"content":"')
    for _ in range(100 * 1024 * 1024 // PIECE):  # 100 MiB, never terminated
        assert scanner.feed(piece) is piece  # forwarded as it came
    scanner.finish()
    assert time.process_time() - started < 3.0  # ~0.1 s here; the quadratic copy took 18.5 s
    assert "unscanned" in scanner.problem


@pytest.mark.parametrize("strip", [False, True])
def test_an_event_over_the_cap_is_passed_on_and_scanning_resumes_after_it(strip: bool) -> None:
    scanner = StreamScanner(OpenAIChatStream(), strip_injected_usage=strip, max_event_bytes=256 * 1024)
    huge = b'data: {"choices":[{"delta":{"content":"' + b"a" * (1024 * 1024) + b'"}}]}\n\n'
    stream = chunk("Hel", None) + huge + chunk(None, USAGE, choices=False) + b"data: [DONE]\n\n"
    out = b"".join(scanner.feed(stream[i:i + 1000]) for i in range(0, len(stream), 1000)) + scanner.finish()
    assert huge in out  # the client gets the over-long event whole
    got = scanner.usage()
    assert (got.source, got.usage.input_tokens) == (UsageSource.REPORTED, 9)  # the usage after it was read
    assert scanner.saw_done
    assert "unscanned" in scanner.problem


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 3 * SHORT_EVENT_BYTES), min_size=1, max_size=40),
       crlf=st.booleans(), strip=st.booleans())
def test_long_events_read_in_any_split_give_what_one_read_gives(sizes: list[int], crlf: bool, strip: bool) -> None:
    """Events longer than SHORT_EVENT_BYTES take the list path; any cut (a terminator split across reads
    included) must forward and meter exactly what one whole read does."""
    big = chunk("x" * (2 * SHORT_EVENT_BYTES), None)
    stream = chunk("Hel", None) + big + chunk("lo", None) + big + chunk(None, USAGE, choices=False) + \
        b"data: [DONE]\n\n"
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")

    def run(cuts: list[int]) -> tuple[bytes, tuple]:
        scanner = StreamScanner(OpenAIChatStream(), strip_injected_usage=strip)
        out, at = [], 0
        for size in cuts:
            out.append(scanner.feed(stream[at:at + size]))
            at += size
        out.append(scanner.feed(stream[at:]) if at < len(stream) else b"")
        out.append(scanner.finish())
        got = scanner.usage()
        return b"".join(out), (got.source, got.usage.input_tokens, got.usage.output_tokens, scanner.saw_done,
                               scanner.problem)

    assert run(sizes) == run([len(stream)])


def test_a_gzip_answer_inflating_past_the_cap_fails_without_inflating_it() -> None:
    bomb = zlib.compress(b" " * (64 * 1024 * 1024), 9)

    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s" % (
                len(bomb), bomb))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        pool = Pool(max_body=1024 * 1024)
        try:
            resp = await pool.request(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", {}, b"{}")
            with pytest.raises(UpstreamTooLargeError, match="inflates past 1048576 bytes"):
                await resp.read()
            resp.close()
        finally:
            await pool.close()
            server.close()

    uvloop.run(main())


def test_the_answer_is_bytes_for_bytes_when_under_the_cap() -> None:
    body = orjson.dumps({"text": "y" * 500_000})

    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            packed = zlib.compress(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s" % (
                len(packed), packed))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        pool = Pool(max_body=len(body))
        try:
            resp = await pool.request(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", {}, b"{}")
            assert await resp.read() == body  # exactly at the cap is allowed
            resp.close()
        finally:
            await pool.close()
            server.close()

    uvloop.run(main())


def test_a_slow_but_steady_upload_outlives_the_body_deadline_and_a_dribble_does_not() -> None:
    """The body deadline grows by one second per BODY_BYTES_PER_S received: a big body on a slow link
    completes, a byte now and then is answered 408 once the deadline passes."""
    with serving(App(), limits=Limits(head_s=1.0, body_s=0.3)) as (_, port):
        piece = b"x" * BODY_BYTES_PER_S
        with connect(port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (6 * len(piece)))
            for _ in range(6):  # 0.9 s in all, three times the deadline, at ~420 KB/s
                time.sleep(0.15)
                sock.sendall(piece)
            status, _, body = read_response(sock, bytearray())
            assert (status, len(body)) == (200, 6 * len(piece))
        with connect(port) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
            started = time.monotonic()
            sock.settimeout(0.1)
            reply = b""
            for _ in range(30):  # one byte every ~0.1 s
                try:
                    sock.sendall(b"x")
                    reply = sock.recv(12)
                    break
                except TimeoutError:
                    continue
            assert reply == b"HTTP/1.1 408"
            assert time.monotonic() - started < 1.5
