"""A running stack for end-to-end tests: fake upstream, pricer and gateway as real processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest

from aimeter.gateway.keys import KeyFile, new_key
from aimeter.local.kafka import free_port
from aimeter.local.stack import Stack
from aimeter.settings import Settings
from aimeter.store.client import query_endpoint_client

CONFIG = """
backends:
  openai:
    kind: openai
    base_url: http://127.0.0.1:{port}/v1
    deployment: proprietary
    provider: openai
  vllm-llama:
    kind: openai_compatible
    base_url: http://127.0.0.1:{port}/v1
    deployment: self_hosted
    provider: vllm
    gpu: {{gpu_type: H100, gpu_count: 2, usd_per_gpu_hour: "2.50", sustained_tokens_per_second: 2500}}
    reference_model: {{provider: openai, model: gpt-4o}}
  anthropic:
    kind: anthropic
    base_url: http://127.0.0.1:{port}
    deployment: proprietary
    provider: anthropic
  gemini:
    kind: gemini
    base_url: http://127.0.0.1:{port}
    deployment: proprietary
    provider: google
  azure:
    kind: azure_openai
    base_url: http://127.0.0.1:{port}
    deployment: proprietary
    provider: azure
  ollama:
    kind: ollama
    base_url: http://127.0.0.1:{port}
    deployment: self_hosted
    provider: ollama
    gpu: {{gpu_type: RTX4090, gpu_count: 1, usd_per_gpu_hour: "0.70", sustained_tokens_per_second: 900}}
    reference_model: {{provider: openai, model: gpt-4o-mini}}
models:
  gpt-4o-mini: {{backend: openai}}
  gpt-3.5-turbo-instruct: {{backend: openai}}
  text-embedding-3-small: {{backend: openai}}
  claude-sonnet-4-6: {{backend: anthropic}}
  gemini-2.5-pro: {{backend: gemini}}
  gpt-4o-prod: {{backend: azure}}
  "llama3.1:8b": {{backend: ollama}}
  gpt-4o: {{backend: openai}}
  llama-3.1-70b: {{backend: vllm-llama, upstream_model: meta-llama/Llama-3.1-70B-Instruct}}
"""


# Keys issued before the gateway starts: (team, project) -> key. Tests look theirs up with key_for().
TEAM_PROJECTS = [("search", "ranking"), ("research", "evals"), ("support", "helpdesk-bot"),
                 ("finance-cli-test", ""), ("keys-test", "")]


def issue_keys(settings: Settings) -> dict[tuple[str, str], str]:
    store = KeyFile(settings.resolved_keys_file)
    records, keys = store.load(), {}
    for team, project in TEAM_PROJECTS:
        keys[team, project], record = new_key(team, project, "", datetime.now(UTC))
        records[record.key_id] = record
    store.save(records)
    return keys


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("stack")
    upstream_port = free_port()
    config = data / "config.yaml"
    config.write_text(CONFIG.format(port=upstream_port), encoding="utf-8")
    settings = Settings(data_dir=data, kafka_bootstrap=kafka_bootstrap, gateway_port=free_port(),
                        query_port=free_port(), pricer_group=f"pricer-{uuid.uuid4().hex[:8]}",
                        pricer_metrics_port=free_port(),
                        config=config, max_body_bytes=1024 * 1024)
    running = Stack(settings, Path(config), fake_upstream_port=upstream_port)
    running.keys = issue_keys(settings)  # type: ignore[attr-defined]
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def clickhouse(stack: Stack) -> clickhouse_connect.driver.client.Client:
    """Reads go through the pricer's read-only ClickHouse HTTP endpoint, as any report client would."""
    return query_endpoint_client(stack.settings.resolved_clickhouse_url, stack.settings.query_port)


def wait_for_row(client, sql: str, parameters: dict, timeout: float = 60.0) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = client.query(sql, parameters=parameters).result_rows
        if rows:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"no row after {timeout} s for {parameters}")


def key_for(stack: Stack, team: str, project: str = "") -> str:
    return stack.keys[team, project]  # type: ignore[attr-defined]
