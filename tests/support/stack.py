"""The end-to-end stack's shared pieces that test modules import: its gateway config, the key a team was
issued, and waiting for a row to land (tests/integration/conftest.py starts the stack with them)."""

from __future__ import annotations

import time

from aimeter.local.stack import Stack

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
