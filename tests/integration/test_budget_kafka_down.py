"""Kafka stops mid-run: a replica's budget ledger stops being current within seconds; a fail_closed budget refuses
(naming the unreachable topic) while a fail_open one keeps serving; when Kafka is back, both serve again."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from aimeter.local.kafka import LocalKafka, free_port
from aimeter.local.stack import Stack
from aimeter.metrics_auth import ensure_token
from aimeter.settings import Settings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CONFIG = """
backends:
  openai: {{kind: openai, base_url: "http://127.0.0.1:{port}/v1", deployment: proprietary, provider: openai}}
models:
  gpt-4o-mini: {{backend: openai}}
budgets:
  caps:
    - {{name: closed-cap, scope: team, value: closed, usd: "100", on_kafka_down: fail_closed}}
    - {{name: open-cap, scope: team, value: open, usd: "100", on_kafka_down: fail_open}}
"""


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[tuple[LocalKafka, Stack]]:
    """A broker of this test's own (it is stopped mid-test) under a pricer, a gateway and the fake upstream."""
    kafka = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port(),
                       cache_dir=REPO / ".aimeter" / "cache" / "kafka")
    upstream = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=upstream), encoding="utf-8")
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=kafka.bootstrap, gateway_port=free_port(),
                        query_port=free_port(), pricer_group=f"pricer-{uuid.uuid4().hex[:8]}", config=config,
                        kafka_delivery_timeout_s=3.0, pricer_metrics_port=free_port(), auth="none")
    stack = Stack(settings, config, fake_upstream_port=upstream)
    try:
        kafka.start()
        stack.start()
        yield kafka, stack
    finally:
        stack.stop()
        kafka.stop()


def current(stack: Stack) -> bool:
    token = ensure_token(stack.settings.resolved_metrics_token_file)
    request = urllib.request.Request(f"{stack.gateway_url}/budgets", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return bool(json.loads(answer.read())["ledger_current"])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def ask(stack: Stack, team: str) -> tuple[int, str]:
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0,
                           default_headers={"x-aimeter-team": team})
    try:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=20, messages=[
            {"role": "user", "content": "fake: completion=20"}])
    except openai.APIStatusError as exc:
        return exc.status_code, str(exc)
    return 200, ""


def test_kafka_stopping_mid_run_fails_closed_or_open_per_budget(own_kafka: tuple[LocalKafka, Stack]) -> None:
    kafka, stack = own_kafka
    wait_until(lambda: current(stack), "the ledger is current")
    assert ask(stack, "closed")[0] == 200
    assert ask(stack, "open")[0] == 200
    kafka.stop()
    noticed = wait_until(lambda: not current(stack), "the replica notices Kafka is down", timeout=30)
    closed = ask(stack, "closed")
    assert closed[0] == 429, closed
    assert "closed-cap" in closed[1]
    assert "unreachable" in closed[1]
    assert ask(stack, "open")[0] == 200  # journaled and spooled, as always while Kafka is down
    kafka.start()
    back = wait_until(lambda: current(stack), "the ledger is current again", timeout=90)
    print(f"\nKafka down noticed in {noticed:.1f} s; current again {back:.1f} s after the broker restarted")
    assert ask(stack, "closed")[0] == 200
