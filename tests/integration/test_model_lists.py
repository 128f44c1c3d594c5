"""Model lists (issue 20): each SDK's own ``models.list()`` through the gateway lists the configured models its
API can reach, in its API's shape, authenticated with a gateway key like every other route. Real HTTP on loopback:
the official openai, anthropic and google-genai SDKs -> the gateway (no upstream is called)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import openai
import pytest
from google import genai

from aimeter.config import parse_config
from aimeter.gateway.app import Gateway
from aimeter.gateway.keys import KeyFile, new_key
from tests.support.http_server import serving
from tests.support.publisher_sink import Sink

pytestmark = pytest.mark.integration

CONFIG = """
backends:
  oa: {kind: openai, base_url: "http://127.0.0.1:9/v1", deployment: proprietary, provider: openai}
  az: {kind: azure_openai, base_url: "http://127.0.0.1:9", deployment: proprietary, provider: azure}
  vllm:
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
    deployment: self_hosted
    provider: vllm
    gpu: {gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: "0.8", sustained_tokens_per_second: 400}
  an: {kind: anthropic, base_url: "http://127.0.0.1:9", deployment: proprietary, provider: anthropic}
  ge: {kind: gemini, base_url: "http://127.0.0.1:9", deployment: proprietary, provider: google}
  ol:
    kind: ollama
    base_url: http://127.0.0.1:9
    deployment: self_hosted
    provider: ollama
    gpu: {gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: "0.8", sustained_tokens_per_second: 400}
models:
  gpt-4o-mini: {backend: oa}
  my-gpt-deployment: {backend: az}
  llama-3.1-8b: {backend: vllm}
  claude-sonnet-4-6: {backend: an}
  gemini-2.5-flash: {backend: ge}
  llama3.2: {backend: ol}
"""
OPENAI_MODELS = ["gpt-4o-mini", "my-gpt-deployment", "llama-3.1-8b"]


@dataclass
class Edge:
    port: int
    key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    data: Path = tmp_path_factory.mktemp("lists")
    key, record = new_key("search", "", "", datetime.now(UTC))
    KeyFile(data / "keys.json").save({record.key_id: record})
    gateway = Gateway(parse_config(CONFIG), Sink(), gateway_id="gw-lists", max_body_bytes=1024 * 1024,
                      upstream_timeout_s=5, keys=KeyFile(data / "keys.json"), credentials=lambda _b: None)
    with serving(gateway) as (_, port):
        yield Edge(port, key)


def get(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_openai_sdk_lists_the_models_its_api_reaches(edge: Edge) -> None:
    client = openai.OpenAI(api_key=edge.key, base_url=edge.url + "/v1", max_retries=0)
    models = list(client.models.list())
    assert [m.id for m in models] == OPENAI_MODELS
    assert {(m.object, m.owned_by) for m in models} == {("model", "openai"), ("model", "azure"), ("model", "vllm")}


def test_anthropic_sdk_gets_anthropics_shape_on_the_same_path(edge: Edge) -> None:
    client = anthropic.Anthropic(api_key=edge.key, base_url=edge.url, max_retries=0)
    models = list(client.models.list())
    assert [(m.id, m.type) for m in models] == [("claude-sonnet-4-6", "model")]


def test_gemini_sdk_lists_gemini_models(edge: Edge) -> None:
    client = genai.Client(api_key=edge.key, http_options={"base_url": edge.url})
    assert [m.name for m in client.models.list()] == ["models/gemini-2.5-flash"]
    status, body = get(f"{edge.url}/v1beta/models?key={edge.key}", {})  # ?key= as Gemini's docs show
    assert (status, [m["name"] for m in body["models"]]) == (200, ["models/gemini-2.5-flash"])


def test_lists_need_a_gateway_key_and_refuse_in_their_apis_shape(edge: Edge) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="am_nope_nope", base_url=edge.url + "/v1", max_retries=0).models.list()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="am_nope_nope", base_url=edge.url, max_retries=0).models.list()
    status, body = get(f"{edge.url}/v1beta/models", {"x-goog-api-key": "am_nope_nope"})
    assert (status, body["error"]["status"]) == (401, "UNAUTHENTICATED")
    status, body = get(f"{edge.url}/v1/models", {})
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    status, _ = get(f"{edge.url}/v1/models?key={edge.key}", {})  # ?key= is Gemini's way only
    assert status == 401
