"""``aimeter ratelimits set|list``: limits written to a key's record in the key store reach a running gateway
(real HTTP, the openai SDK, the fake upstream) without a restart, and are listed beside the config's."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime

import openai
import pytest

from aimeter.cli import main
from aimeter.config import parse_config
from aimeter.gateway.app import Gateway
from aimeter.gateway.keys import KeyFile, new_key
from tests.support.http_server import serving
from tests.support.publisher_sink import Sink
from tests.support.upstream_thread import fake_upstream_thread

pytestmark = pytest.mark.integration

CONFIG = """
backends:
  openai: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
models:
  gpt-4o-mini: {{backend: openai}}
rate_limits:
  replicas: 2
  teams: {{cli: {{rpm: 100}}}}
"""


def _chat(client: openai.OpenAI):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_limits_set_on_a_key_reach_a_running_gateway_and_are_listed(tmp_path, monkeypatch, capsys):
    keys_file = tmp_path / "keys.json"
    secret, record = new_key("cli", "", "", datetime.now(UTC))
    record = replace(record, limits={"budgets": []})  # other entries of limits are kept
    KeyFile(keys_file).save({record.key_id: record})
    config_file = tmp_path / "gateway.yaml"
    monkeypatch.setenv("AIMETER_KEYS_STORE", "file")
    monkeypatch.setenv("AIMETER_KEYS_FILE", str(keys_file))
    monkeypatch.setenv("AIMETER_AUTH", "keys")
    monkeypatch.setenv("AIMETER_DATA_DIR", str(tmp_path))
    with fake_upstream_thread() as upstream_port:
        config_file.write_text(CONFIG.format(port=upstream_port), encoding="utf-8")
        gateway = Gateway(parse_config(config_file.read_text()), Sink(), gateway_id="gw-rl-cli",
                          max_body_bytes=1024 * 1024, upstream_timeout_s=30, keys=KeyFile(keys_file),
                          credentials=lambda _b: "sk-upstream")
        with serving(gateway) as (_, port):
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
            assert "x-ratelimit-limit-tokens" not in _chat(client).headers  # only the team's rpm so far

            assert main(["ratelimits", "set", "--key", record.key_id, "--rpm", "4", "--tpm", "90000"]) == 0
            stored = KeyFile(keys_file).load()[record.key_id].limits
            assert stored == {"budgets": [], "rpm": 4, "tpm": 90000}
            deadline = time.monotonic() + 10  # the gateway re-reads the key file every second
            while "x-ratelimit-limit-tokens" not in (headers := _chat(client).headers):
                assert time.monotonic() < deadline, "the key's new limits never reached the gateway"
                time.sleep(0.2)
            assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-limit-tokens"]) == ("2", "45000")
            _chat(client)  # the replica's share is 4 // 2 = 2 requests a minute: this is the second
            with pytest.raises(openai.RateLimitError, match=f"gateway key {record.key_id}"):
                _chat(client)

            capsys.readouterr()
            assert main(["ratelimits", "list", "--config", str(config_file), "--format", "json"]) == 0
            rows = json.loads(capsys.readouterr().out)
            assert {(r["scope"], r["name"], r["kept in"]) for r in rows} == {
                ("team", "cli", "config"), ("key", record.key_id, "key store (wins)")}

            assert main(["ratelimits", "set", "--key", record.key_id, "--clear"]) == 0
            assert KeyFile(keys_file).load()[record.key_id].limits == {"budgets": []}
