"""The gateway's HTTP/1.1 upstream client against small raw servers, on asyncio's loop and on uvloop.

Each server is a few lines of ``asyncio.start_server`` writing exact bytes, so framing, drops,
stale keep-alive connections, timeouts and TLS are each provoked on purpose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from aimeter.gateway.http1 import HIGH_WATER, UpstreamError, UpstreamTimeoutError, request_head, split_url
from aimeter.gateway.http1_pool import Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[None]], None]:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[return-value]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


class Server:
    """Counts connections and requests; ``handler`` answers one connection."""

    def __init__(self, handler: Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler, self.ssl_context = handler, ssl_context
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> str:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(self, reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=self.ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}/v1/chat/completions"

    async def __aexit__(self, *_: object) -> None:
        self.server.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        self.requests.append(await read_request(reader))
        return self.requests[-1]


async def keep_alive(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await server.request(reader)
        writer.write(OK)
        await writer.drain()


def test_content_length_body_and_connection_reuse(run):
    async def main() -> None:
        server = Server(keep_alive)
        async with server as url:
            pool = Pool()
            for _ in range(3):
                resp = await pool.request(url, {"content-type": "application/json"}, b'{"q": 1}')
                assert (resp.status, await resp.read()) == (200, b'{"a": true}')
                assert resp.header(b"content-type") == b"application/json"
                resp.close()
            await pool.close()
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
        assert server.requests[0].endswith(b'content-length: 8\r\n\r\n{"q": 1}')

    run(main())


def test_chunked_stream_arrives_in_order_and_the_connection_is_reused(run):
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(5):
                event = f"data: {i}\n\n".encode()
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.005)
            writer.write(b"0\r\n\r\n")

    async def main() -> None:
        server = Server(handler)
        async with server as url:
            pool = Pool()
            for _ in range(2):
                resp = await pool.request(url, {}, b"{}")
                got = b""
                while chunk := await resp.next_chunk():
                    got += chunk
                assert got == b"".join(f"data: {i}\n\n".encode() for i in range(5))
                resp.close()
            await pool.close()
        assert server.connections == 1

    run(main())


def test_body_delimited_by_close(run):
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"part two")

    async def main() -> None:
        async with Server(handler) as url:
            pool = Pool()
            resp = await pool.request(url, {}, b"")
            assert await resp.read() == b"part one, part two"
            resp.close()
            await pool.close()

    run(main())


def test_a_drop_mid_body_is_an_error_after_the_bytes_that_came(run):
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst bytes")
        await writer.drain()
        await asyncio.sleep(0.01)

    async def main() -> None:
        async with Server(handler) as url:
            pool = Pool()
            resp = await pool.request(url, {}, b"")
            assert await resp.next_chunk() == b"first bytes"
            with pytest.raises(UpstreamError, match="mid-body"):
                await resp.next_chunk()
            resp.close()
            resp = await pool.request(url, {}, b"")
            with pytest.raises(UpstreamError, match="mid-body"):
                await resp.read()
            await pool.close()

    run(main())


def test_backpressure_pauses_reading_while_the_consumer_lags(run):
    total = 4 * HIGH_WATER

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for i in range(total // 4096):
            writer.write(bytes([i % 251]) * 4096)
            await writer.drain()

    async def main() -> None:
        async with Server(handler) as url:
            pool = Pool()
            resp = await pool.request(url, {}, b"")
            await asyncio.sleep(0.2)  # a slow consumer: the client must stop reading, not buffer everything
            assert resp._paused
            assert resp._buffered < HIGH_WATER + 256 * 1024
            got = []
            while chunk := await resp.next_chunk():
                got.append(chunk)
            body = b"".join(got)
            assert body == b"".join(bytes([i % 251]) * 4096 for i in range(total // 4096))
            resp.close()
            await pool.close()

    run(main())


def test_refused_connection_is_an_upstream_error(run):
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        pool = Pool()
        with pytest.raises(UpstreamError, match="cannot connect"):
            await pool.request(f"http://127.0.0.1:{port}/x", {}, b"")
        await pool.close()

    run(main())


def test_silent_upstream_times_out(run):
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def main() -> None:
        async with Server(handler) as url:
            pool = Pool(read_timeout=0.2)
            resp = await pool.request(url, {}, b"")
            with pytest.raises(UpstreamTimeoutError, match=r"0\.2 s"):
                await resp.read()
            resp.close()
            await pool.close()

        async with Server(lambda s, r, w: asyncio.sleep(5)) as url:
            pool = Pool(read_timeout=0.2)
            with pytest.raises(TimeoutError):
                await pool.request(url, {}, b"")
            await pool.close()

    run(main())


def test_the_cap_makes_callers_wait_then_time_out(run):
    async def slow(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.request(reader)
            await asyncio.sleep(0.3)
            writer.write(OK)

    async def main() -> None:
        server = Server(slow)
        async with server as url:
            pool = Pool(max_per_origin=1, connect_timeout=1.0)

            async def one() -> bytes:
                resp = await pool.request(url, {}, b"")
                try:
                    return await resp.read()
                finally:
                    resp.close()

            assert await asyncio.gather(one(), one()) == [b'{"a": true}'] * 2
            assert server.connections == 1
            pool.connect_timeout = 0.1
            first = asyncio.ensure_future(one())
            await asyncio.sleep(0.05)
            with pytest.raises(UpstreamTimeoutError, match="no connection"):
                await one()
            assert await first == b'{"a": true}'
            await pool.close()

    run(main())


def test_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(run):
    async def one_per_connection(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(OK)
        await writer.drain()
        await server.request(reader)  # the next request on this connection: closed unanswered (stale race)

    async def main() -> None:
        server = Server(one_per_connection)
        async with server as url:
            pool = Pool()
            for _ in range(3):
                resp = await pool.request(url, {}, b"{}")
                assert await resp.read() == b'{"a": true}'
                resp.close()
            await pool.close()
        assert server.connections == 3
        assert len(server.requests) == 5  # 3 answered + 2 retried after the stale connection closed

    run(main())


def test_a_fresh_connection_closed_before_answering_is_not_retried(run):
    async def main() -> None:
        server = Server(lambda s, r, w: s.request(r))  # reads the request, closes without an answer
        async with server as url:
            pool = Pool()
            with pytest.raises(UpstreamError, match="before a complete response head"):
                await pool.request(url, {}, b"{}")
            await pool.close()
        assert len(server.requests) == 1  # a POST may have been acted on: never sent twice

    run(main())


@pytest.mark.parametrize("garbage", [b"NOT HTTP\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                     b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
def test_malformed_response_is_an_upstream_error(run, garbage):
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(garbage)
        await writer.drain()
        await asyncio.sleep(0.5)

    async def main() -> None:
        async with Server(handler) as url:
            pool = Pool()
            with pytest.raises(UpstreamError, match="malformed"):
                await pool.request(url, {}, b"")
            await pool.close()

    run(main())


def test_gzip_is_decoded_and_interim_100_is_skipped(run):
    body = b'{"usage": {"prompt_tokens": 3}}' * 20
    packed = gzip.compress(body)

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed))

    async def main() -> None:
        async with Server(handler) as url:
            pool = Pool()
            resp = await pool.request(url, {}, b"")
            assert resp.status == 200
            assert await resp.read() == body
            assert resp.header(b"content-encoding") is None
            resp.close()
            await pool.close()

    run(main())


def test_unsolicited_bytes_after_an_answer_retire_the_connection(run):
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.request(reader)
            writer.write(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")

    async def main() -> None:
        server = Server(handler)
        async with server as url:
            pool = Pool()
            for _ in range(2):
                resp = await pool.request(url, {}, b"")
                assert await resp.read() == b'{"a": true}'
                resp.close()
                await asyncio.sleep(0.05)
            await pool.close()
        assert server.connections == 2

    run(main())


@pytest.mark.parametrize("value", ["a\r\nx-evil: 1", "a\nb", "a\rb"])
def test_line_breaks_in_headers_are_refused(value):
    origin, target = split_url("http://up.example:8000/v1/chat?x=1")
    assert (origin.host, origin.port, target) == ("up.example", 8000, "/v1/chat?x=1")
    with pytest.raises(UpstreamError, match="line break"):
        request_head("POST", target, origin, {"authorization": value}, 0)


def test_urls_are_split_once_per_origin():
    a, _ = split_url("https://api.openai.com/v1/chat/completions")
    b, target = split_url("https://api.openai.com/v1/embeddings")
    assert a is b
    assert (a.port, a.tls, target) == (443, True, "/v1/embeddings")
    with pytest.raises(UpstreamError, match="unsupported"):
        split_url("ftp://x/y")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_upstream_with_a_trusted_self_signed_cert_and_refusal_without(run, tmp_path):
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        server = Server(keep_alive, ssl_context=server_ctx)
        async with server as url:
            pool = Pool(ssl_context=trusting)
            for _ in range(2):
                resp = await pool.request(url, {}, b"{}")
                assert await resp.read() == b'{"a": true}'
                resp.close()
            await pool.close()
            assert server.connections == 1
            default = Pool()  # the default context verifies: a self-signed upstream is refused
            with pytest.raises(UpstreamError, match="cannot connect"):
                await default.request(url, {}, b"{}")
            await default.close()

    run(main())
