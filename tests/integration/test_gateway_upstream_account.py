"""The gateway fills each event's provider-account fields (issue 19): the backend's declared credential id and
project/workspace (never the key), and the service tier the request asked for; a backend that declares no
account leaves them empty. Real HTTP: the official SDKs -> gateway -> fake upstream, on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from aimeter.config import parse_config
from aimeter.gateway.app import Gateway
from tests.support.http_server import serving
from tests.support.publisher_sink import Sink
from tests.support.upstream_thread import fake_upstream_thread

pytestmark = pytest.mark.integration

CONFIG = """
backends:
  openai-prod:
    kind: openai
    base_url: http://127.0.0.1:{port}/v1
    deployment: proprietary
    provider: openai
    account: {{credential_id: key_prod_1, project_id: proj_abc123}}
  openai-plain: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
  anthropic:
    kind: anthropic
    base_url: http://127.0.0.1:{port}
    deployment: proprietary
    provider: anthropic
    account: {{credential_id: key_prod_2, workspace_id: wrkspc_01JwQ}}
models:
  gpt-4o-mini: {{backend: openai-prod}}
  gpt-4o: {{backend: openai-plain}}
  claude-sonnet-4-6: {{backend: anthropic}}
"""
SECRET = "sk-upstream-secret-never-in-events-Zz9"


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[int, Sink]]:
    with fake_upstream_thread() as upstream_port:
        sink = Sink()
        gateway = Gateway(parse_config(CONFIG.format(port=upstream_port)), sink, gateway_id="gw-account",
                          max_body_bytes=1024 * 1024, upstream_timeout_s=30, keys=None, credentials=lambda _b: SECRET)
        with serving(gateway) as (_, port):
            yield port, sink


def test_events_carry_the_declared_account_and_the_requested_tier(edge):
    port, sink = edge
    before = len(sink.events)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   service_tier="flex")
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="unused", max_retries=0).messages.create(
        model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    events = sink.wait(before + 3)[before:]
    assert [(e["backend"], e["credential_id"], e["upstream_project"], e["service_tier"]) for e in events] == [
        ("openai-prod", "key_prod_1", "proj_abc123", "flex"),
        ("openai-plain", "", "", ""),
        ("anthropic", "key_prod_2", "wrkspc_01JwQ", ""),
    ]
    assert not any(SECRET.encode() in raw or b"Zz9" in raw for raw in sink.raw)
