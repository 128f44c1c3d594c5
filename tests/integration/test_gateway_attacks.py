"""The gateway's hostile edges (issue 13), attacked as an attacker would, over real loopback HTTP.

The gateway app is served by its own HTTP/1.1 server (as in production, in a thread) in front of the
project's fake upstream (aiohttp, in another thread), whose ``fake-attack:`` directive plays the hostile
upstream. Events go to a recording sink: what matters here is that the gateway *emits* them (Kafka and
ClickHouse are proven elsewhere). Limits are set small so that every attack is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import orjson
import pytest

from aimeter.config import parse_config
from aimeter.gateway.app import Gateway
from aimeter.gateway.keys import KeyFile, new_key
from aimeter.gateway.server_conn import Limits
from tests.support.http_server import closed, read_response, serving
from tests.support.upstream_thread import fake_upstream_thread

HEAD_S, BODY_S, PER_PEER = 0.5, 1.0, 64
MAX_UPSTREAM_BODY = 4 * 1024 * 1024
PER_KEY = 3

CONFIG = """
backends:
  openai: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
  vllm:
    kind: openai_compatible
    base_url: "http://127.0.0.1:{port}/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {{gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: "2.50", sustained_tokens_per_second: 2500}}
  anthropic: {{kind: anthropic, base_url: "http://127.0.0.1:{port}", deployment: proprietary, provider: anthropic}}
  gemini: {{kind: gemini, base_url: "http://127.0.0.1:{port}", deployment: proprietary, provider: google}}
models:
  gpt-4o-mini: {{backend: openai}}
  llama-3.1-8b: {{backend: vllm}}
  claude-sonnet-4-6: {{backend: anthropic}}
  gemini-2.5-pro: {{backend: gemini}}
"""


class Sink:
    """Records every event the gateway emits, decoded."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish_encoded(self, payload: bytes, event_id: str, started_at: datetime, ended_at: datetime) -> None:
        self.events.append(orjson.loads(payload))

    def accepting(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        return {}

    def wait_for(self, event_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event["event_id"] == event_id:
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no event {event_id} emitted within {timeout} s")

    def new_since(self, count: int, want: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count + want and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events[count:]


class Edge:
    def __init__(self, gateway: Gateway, sink: Sink, port: int, upstream_port: int, keys: dict[str, str]) -> None:
        self.gateway, self.sink, self.port, self.upstream_port, self.keys = gateway, sink, port, upstream_port, keys
        self.url = f"http://127.0.0.1:{port}"

    def openai(self, team: str = "search") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[team], max_retries=0, timeout=30)

    def pool_connections(self) -> int:
        pool = self.gateway.forwarder._pool  # what the attack would exhaust
        assert pool is not None
        return sum(host.count for host in pool._hosts.values())


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    data: Path = tmp_path_factory.mktemp("edge")
    store, keys, records = KeyFile(data / "keys.json"), {}, {}
    for team in ("search", "research", "limited"):
        keys[team], record = new_key(team, "", "", datetime.now(UTC))
        records[record.key_id] = record
    store.save(records)
    sink = Sink()
    with fake_upstream_thread() as upstream_port:
        gateway = Gateway(parse_config(CONFIG.format(port=upstream_port)), sink, gateway_id="gw-attacks",
                          max_body_bytes=1024 * 1024, upstream_timeout_s=30, keys=KeyFile(data / "keys.json"),
                          credentials=lambda _b: None, upstream_max_body_bytes=MAX_UPSTREAM_BODY,
                          max_concurrent_per_key=PER_KEY)
        with serving(gateway, limits=Limits(head_s=HEAD_S, body_s=BODY_S, per_peer=PER_PEER)) as (_, port):
            yield Edge(gateway, sink, port, upstream_port, keys)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def post(edge: Edge, body: dict[str, Any] | bytes, path: str = "/v1/chat/completions", team: str = "search",
         **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"authorization": f"Bearer {edge.keys[team]}", "content-type": "application/json"}
    return httpx.post(edge.url + path, content=content, headers=headers, timeout=30, **kwargs)


def raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"


def authorized(edge: Edge, team: str = "search") -> bytes:
    """A head with a valid key: the gateway then waits for the body (a keyless one is answered 401 at once)."""
    return HEAD + b"authorization: Bearer %s\r\n" % edge.keys[team].encode()


# 1. Slow or missing request bodies ------------------------------------------------------------------------------

def test_a_body_declared_and_never_sent_is_answered_408_and_closed(edge: Edge) -> None:
    with raw(edge.port) as sock:
        sock.sendall(authorized(edge) + b"content-length: 1000\r\n\r\n" + b'{"model": ')
        started = time.monotonic()
        status, _, body = read_response(sock, bytearray())
        took = time.monotonic() - started
        assert status == 408
        assert b"body" in body
        assert closed(sock)
    assert BODY_S * 0.9 < took < BODY_S + 2


def test_a_head_sent_byte_by_byte_is_answered_408(edge: Edge) -> None:
    with raw(edge.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        sock.settimeout(HEAD_S + 3)
        started = time.monotonic()
        for _ in range(3):  # slowloris: a byte now and then must not keep it open
            time.sleep(HEAD_S / 4)
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
        status = read_response(sock, bytearray())[0]
        assert status == 408
        assert time.monotonic() - started < HEAD_S + 2


def test_one_peer_cannot_hold_every_connection(edge: Edge) -> None:
    """The issue's attack, bounded: 200 connections each declaring a body and never sending it."""
    socks: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = raw(edge.port)
            socks.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(authorized(edge) + b"content-length: 100\r\n\r\n")
        time.sleep(0.2)
        refused = 0
        for sock in socks[PER_PEER:]:
            sock.settimeout(2)
            with contextlib.suppress(ConnectionError):
                reply = sock.recv(200)
                refused += reply.startswith(b"HTTP/1.1 503")
        assert refused >= 200 - PER_PEER - 5  # the ones over the cap: 503 and closed
        # Every held one is answered and closed: 429 past the key's concurrency limit (at once), 408 for
        # the others once their body deadline passes. Nothing lingers.
        answers = []
        for sock in socks[:PER_PEER]:
            sock.settimeout(BODY_S + 3)
            answers.append(read_response(sock, bytearray())[0])
            assert closed(sock, timeout=BODY_S + 3)
        assert sorted(set(answers)) == [408, 429]
        assert answers.count(408) == PER_KEY
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.2)
    assert post(edge, chat("hello")).status_code == 200  # and the next client is served


# 2. Unbounded upstream answers ----------------------------------------------------------------------------------

def test_a_gzip_bomb_is_a_502_in_the_api_shape_memory_stays_flat_and_the_event_is_emitted(edge: Edge) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    client = edge.openai()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "fake-attack: gzip_bomb kb=262144"}])  # 256 MiB from ~260 KB
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert caught.value.status_code == 502
    assert "inflates past" in caught.value.message
    event = edge.sink.wait_for(caught.value.response.headers["x-aimeter-event-id"])
    assert (event["status"], event["http_status"]) == ("upstream_error", 502)
    assert grown_mib < 100, f"the gateway grew by {grown_mib:.0f} MiB"


def test_a_whole_answer_over_the_cap_is_a_502(edge: Edge) -> None:
    resp = post(edge, chat(f"fake-attack: huge_whole kb={MAX_UPSTREAM_BODY // 1024 + 1024}"))
    assert resp.status_code == 502
    assert "longer than" in resp.json()["error"]["message"]
    event = edge.sink.wait_for(resp.headers["x-aimeter-event-id"])
    assert event["status"] == "upstream_error"


def test_an_unterminated_sse_event_is_relayed_in_linear_time_and_metered(edge: Edge) -> None:
    """100 MiB in one never-ending event took 18.5 s of event loop before; now it is passed on unscanned."""
    started = time.monotonic()
    received = 0
    with httpx.stream("POST", f"{edge.url}/v1/chat/completions", timeout=60, headers={
            "authorization": f"Bearer {edge.keys['search']}"},
            content=orjson.dumps(chat("fake-attack: unterminated_sse kb=102400", stream=True))) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_raw():
            received += len(chunk)
        event_id = resp.headers["x-aimeter-event-id"]
    took = time.monotonic() - started
    assert received >= 100 * 1024 * 1024
    event = edge.sink.wait_for(event_id)
    assert event["stream"] is True
    assert event["status"] in {"broken_stream", "ok"}
    assert took < 10, f"relaying took {took:.1f} s"


# 3. Usage that escapes the meter --------------------------------------------------------------------------------

def with_nested(body: dict[str, Any], depth: int) -> bytes:
    """``body`` plus a field nested ``depth`` lists deep (encoded by hand: orjson and json stop far earlier)."""
    return orjson.dumps(body)[:-1] + b',"metadata_blob":' + b"[" * depth + b'"deep"' + b"]" * depth + b"}"


def test_a_deep_body_whose_client_hangs_up_mid_stream_is_still_metered(edge: Edge) -> None:
    """~1,000 levels (orjson reads them); the client leaves before the usage chunk. No event was published."""
    payload = with_nested(chat("fake: prompt=50 completion=40 chunks=40 gap_ms=50", stream=True,
                               stream_options={"include_usage": True}), 1000)
    before = len(edge.sink.events)
    with raw(edge.port) as sock:
        sock.sendall(authorized(edge) + b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # the stream has begun; now hang up
    events = edge.sink.new_since(before, 1)
    assert len(events) == 1, "the request reached the upstream, so its event must be emitted"
    assert events[0]["status"] == "client_cancelled"
    assert events[0]["usage"]["input_tokens"] > 0  # estimated, never a silent 0


def test_a_body_deeper_than_the_encoder_allows_is_a_400_naming_it(edge: Edge) -> None:
    """The gateway re-encodes a stream's body to ask for usage; orjson encodes 254 levels at most."""
    before = len(edge.sink.events)
    resp = post(edge, with_nested(chat("hi", stream=True), 300))
    assert resp.status_code == 400
    assert "nests deeper" in resp.json()["error"]["message"]
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert len(edge.sink.events) == before  # refused before the upstream: nothing to meter


@pytest.mark.parametrize("flag", [1, "true"])
def test_stream_values_a_pydantic_server_streams_are_metered_as_streams(edge: Edge, flag: Any) -> None:
    """vLLM and SGLang stream ``"stream": 1`` and ``"stream": "true"``; the gateway recorded $0 for them."""
    body = {"model": "llama-3.1-8b", "stream": flag,
            "messages": [{"role": "user", "content": "fake: prompt=120 completion=30 chunks=5"}]}
    resp = post(edge, body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert b"data: [DONE]" in resp.content
    event = edge.sink.wait_for(resp.headers["x-aimeter-event-id"])
    assert event["stream"] is True
    assert (event["usage_source"], event["usage"]["input_tokens"], event["usage"]["output_tokens"]) == (
        "reported", 120, 30)


# 4. One tenant cannot starve the shared upstream pool -----------------------------------------------------------

def test_abandoned_requests_release_their_upstream_connections_and_are_metered(edge: Edge) -> None:
    payload = orjson.dumps(chat("fake: latency_ms=5000 prompt=10 completion=5"))
    before = len(edge.sink.events)
    socks = []
    for team in ("search", "research"):  # within each key's concurrency limit
        for _ in range(PER_KEY):
            sock = raw(edge.port)
            sock.sendall(authorized(edge, team) + b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
            socks.append(sock)
    deadline = time.monotonic() + 3
    while edge.pool_connections() < len(socks) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert edge.pool_connections() >= len(socks)
    for sock in socks:
        sock.close()  # the clients give up long before the upstream answers
    deadline = time.monotonic() + 1.5
    while edge.pool_connections() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert edge.pool_connections() == 0, "an abandoned request must give its upstream connection back"
    events = edge.sink.new_since(before, len(socks), timeout=2)
    assert [e["status"] for e in events] == ["client_cancelled"] * len(socks)


def test_a_key_over_its_concurrency_limit_gets_429_in_each_api_shape(edge: Edge) -> None:
    slow = chat("fake: latency_ms=1500")
    with httpx.Client(timeout=30) as client:
        pending = [threading.Thread(target=post, args=(edge, slow), kwargs={"team": "limited"})
                   for _ in range(PER_KEY)]
        for thread in pending:
            thread.start()
        deadline = time.monotonic() + 3
        while edge.gateway._in_flight.get(_key_id(edge, "limited"), 0) < PER_KEY:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as caught:
            edge.openai("limited").chat.completions.create(model="gpt-4o-mini",
                                                           messages=[{"role": "user", "content": "hi"}])
        assert "AIMETER_MAX_CONCURRENT_PER_KEY" in caught.value.message
        assert caught.value.response.headers["retry-after"] == "1"
        claude = anthropic.Anthropic(base_url=edge.url, api_key=edge.keys["limited"], max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as caught_a:
            claude.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                                   messages=[{"role": "user", "content": "hi"}])
        assert caught_a.value.body["error"]["type"] == "rate_limit_error"
        # Another tenant is served meanwhile.
        assert client.post(f"{edge.url}/v1/chat/completions", content=orjson.dumps(chat("hi")),
                           headers={"authorization": f"Bearer {edge.keys['search']}"}).status_code == 200
        for thread in pending:
            thread.join(10)
    assert edge.openai("limited").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices


def _key_id(edge: Edge, team: str) -> str:
    return edge.keys[team].split("_")[1]


# 5. Low ---------------------------------------------------------------------------------------------------------

def test_upstream_x_aimeter_headers_are_stripped(edge: Edge) -> None:
    resp = post(edge, chat("fake-attack: spoof_headers"))
    assert resp.status_code == 200
    assert resp.headers.get_list("x-aimeter-event-id") != ["spoofed-by-upstream"]
    assert len(resp.headers.get_list("x-aimeter-event-id")) == 1
    assert "x-aimeter-team" not in resp.headers
    edge.sink.wait_for(resp.headers["x-aimeter-event-id"])  # the id is ours


def test_a_query_key_is_accepted_on_gemini_routes_only(edge: Edge) -> None:
    key = edge.keys["search"]
    gemini = httpx.post(f"{edge.url}/v1beta/models/gemini-2.5-pro:generateContent?key={key}", timeout=30,
                        content=orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
    assert gemini.status_code == 200
    openai_route = httpx.post(f"{edge.url}/v1/chat/completions?key={key}", content=orjson.dumps(chat("hi")),
                              timeout=30)
    assert openai_route.status_code == 401
    assert "missing gateway API key" in openai_route.json()["error"]["message"]


def test_a_client_hanging_up_mid_body_is_one_info_line(edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aimeter"):
        with raw(edge.port) as sock:
            sock.sendall(authorized(edge) + b'content-length: 5000\r\n\r\n{"model": ')
            time.sleep(0.2)
        time.sleep(0.3)
    mine = [r for r in caplog.records if r.name.startswith("aimeter")]
    assert [(r.levelno, r.exc_info) for r in mine] == [(logging.INFO, None)], [r.getMessage() for r in mine]
    assert "went away" in mine[0].getMessage()
