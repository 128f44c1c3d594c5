"""Hostile requests get a precise error in the API's shape, and nothing reaches the upstream or ClickHouse."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.support.stack import key_for

pytestmark = pytest.mark.integration


def post(stack, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/chat/completions"):
    request = urllib.request.Request(f"{stack.gateway_url}{path}", data=body, method="POST", headers={
        "content-type": "application/json", "authorization": f"Bearer {key_for(stack, 'search', 'ranking')}",
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_body_over_the_limit_is_413(stack):
    status, body = post(stack, b"{" + b" " * (stack.settings.max_body_bytes + 10) + b"}")
    assert status == 413
    assert "exceeds the gateway limit" in body["error"]["message"]


@pytest.mark.parametrize(("raw", "needle"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'{"model": 123, "messages": []}', "`model`"),
    (b'{"messages": []}', "`model`"),
    (b'{"model": ""}', "`model`"),
    ("{\"model\": \"gpt-4o-mini\", \"x\": \"\ud800\"}".encode("utf-8", "surrogatepass"), "not valid JSON"),
])
def test_malformed_bodies_are_400_naming_the_problem(stack, raw, needle):
    status, body = post(stack, raw)
    assert status == 400
    assert needle in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("header", "value"), [
    ("X-Aimeter-Project", "evil\tproject"),
    ("X-Aimeter-User", "a" * 129),
    ("X-Aimeter-Tags", ",".join(f"k{i}=v" for i in range(40))),
    ("X-Aimeter-Tags", "novalue"),
])
def test_bad_attribution_headers_are_400_naming_the_header(stack, header, value):
    status, body = post(stack, b'{"model": "gpt-4o-mini", "messages": []}', {header: value})
    assert status == 400
    assert header.lower() in body["error"]["message"].lower()


def test_absurdly_large_header_is_refused_without_crashing(stack):
    host, port = "127.0.0.1", stack.settings.gateway_port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        reply = sock.recv(200)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4")
    status, _ = post(stack, b'{"model": "not-configured"}')
    assert status == 404  # and the gateway still answers


def test_wrong_method_and_unknown_path(stack):
    request = urllib.request.Request(f"{stack.gateway_url}/v1/chat/completions", method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 405
    status, body = post(stack, b"{}", path="/v1/admin/secrets")
    assert status == 404
    assert "no route" in body["error"]["message"]
