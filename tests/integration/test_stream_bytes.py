"""What the client receives through the gateway is byte for byte what the upstream sent.

Each stream is fetched twice with the same body: directly from the fake upstream and through the
gateway. The fake's ``frozen=1`` directive fixes ids and timestamps so the two can be compared.
The one allowed edit: when the gateway itself asked for ``include_usage``, the usage-only chunk and
the ``"usage":null`` fields it caused are removed, so the client sees the stream it asked for.
"""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.stack import key_for

pytestmark = pytest.mark.integration
DIRECTIVE = "fake: prompt=900 completion=120 cached=100 chunks=12 frozen=1"


def fetch(port: int, path: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def both(stack, path: str, body: dict) -> tuple[bytes, bytes]:
    direct_status, direct = fetch(stack.fake_upstream_port, path, body)
    auth = {"Authorization": f"Bearer {key_for(stack, 'search', 'ranking')}"}
    via_status, via = fetch(stack.settings.gateway_port, path, body, auth)
    assert (direct_status, via_status) == (200, 200)
    return direct, via


CASES = {
    "openai-chat-client-asked-usage": ("/v1/chat/completions", {
        "model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": DIRECTIVE}]}),
    "openai-completions": ("/v1/completions", {
        "model": "gpt-3.5-turbo-instruct", "stream": True, "prompt": DIRECTIVE}),
    "openai-responses": ("/v1/responses", {"model": "gpt-4o-mini", "stream": True, "input": DIRECTIVE}),
    "anthropic": ("/v1/messages", {"model": "claude-sonnet-4-6", "stream": True, "max_tokens": 500,
                                   "messages": [{"role": "user", "content": DIRECTIVE}]}),
    "gemini-sse": ("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
                   {"contents": [{"role": "user", "parts": [{"text": DIRECTIVE}]}]}),
    "ollama-ndjson": ("/api/chat", {"model": "llama3.1:8b", "messages": [{"role": "user", "content": DIRECTIVE}]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stream_passes_through_unchanged(stack, case: str) -> None:
    path, body = CASES[case]
    direct, via = both(stack, path, body)
    assert len(direct) > 200
    assert via == direct


def test_injected_usage_is_removed_and_nothing_else_changes(stack) -> None:
    """The client did not ask for usage: the gateway asks upstream for it, and strips exactly that."""
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": DIRECTIVE}]}
    direct, via = both(stack, "/v1/chat/completions", body)
    assert b'"usage"' not in direct
    assert via == direct
