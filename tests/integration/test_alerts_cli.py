"""`aimeter alerts` as it runs: its own process on the end-to-end stack (gateway, Kafka, pricer and its query
endpoint), apps calling through the gateway with the openai SDK, and a real HTTP webhook on loopback.

A soft budget of $0.0005 on one user: the first request ($0.00036 of gpt-4o-mini) crosses 50%, the second 80% and
100%. Each threshold is posted once; a restarted process (ledger and topic read again) posts nothing new."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import openai
import pytest

from aimeter.local.stack import Stack, settings_env
from tests.support.stack import key_for

pytestmark = pytest.mark.integration


class Hook(BaseHTTPRequestHandler):
    posts: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    Hook.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Hook.posts
    finally:
        server.shutdown()
        server.server_close()


def start_alerts(stack: Stack, config: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(stack.settings), "AIMETER_KAFKA_BOOTSTRAP": stack.bootstrap,
           "AIMETER_ALERTS_WEBHOOK_URL": url, "AIMETER_ALERTS_GROUP": f"alerts-{uuid.uuid4().hex[:8]}",
           "AIMETER_ALERTS_SPIKE_FLOOR_USD": "1000000000"}  # other tests' traffic shares the stack
    proc = subprocess.Popen([sys.executable, "-m", "aimeter", "alerts", "--config", str(config)],
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while "following" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def wait_for(posts: list[dict], budget: str, count: int, log: Path, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ours = [p for p in posts if p.get("budget") == budget]
        if len(ours) >= count:
            return ours
        time.sleep(0.2)
    raise AssertionError(f"{[p.get('alert_id') for p in posts]}\n{log.read_text(errors='replace')}")


def test_aimeter_alerts_posts_each_threshold_once_and_not_again_after_a_restart(stack, webhook, tmp_path):
    url, posts = webhook
    user, budget = f"alerts-{uuid.uuid4().hex[:8]}", f"alerts-e2e-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config.yaml"
    config.write_text(Path(stack.config_path).read_text() + f"""
budgets:
  caps:
    - {{name: {budget}, scope: user, value: {user}, usd: "0.0005", period: day, enforcement: soft}}
""")
    log = tmp_path / "alerts.log"
    app = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key_for(stack, "search", "ranking"),
                        max_retries=0, default_headers={"X-Aimeter-User": user})

    def call() -> None:
        app.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "user", "content": "hello fake: prompt=1200 completion=300"}])

    proc = start_alerts(stack, config, url, log)
    try:
        call()
        ours = wait_for(posts, budget, 1, log)
        assert [p["threshold_pct"] for p in ours] == ["50"]
        assert ours[0]["scope"] == "user"
        assert ours[0]["scope_value"] == user
        assert ours[0]["text"].startswith(f"Budget '{budget}' (user {user}) reached 50%: $0.00036 of $0.0005")
        call()
        ours = wait_for(posts, budget, 3, log)
        assert [p["threshold_pct"] for p in ours] == ["50", "80", "100"]
        assert Decimal(ours[2]["spent_usd"]) == Decimal("0.00072")  # 2 x (1200 x $0.15 + 300 x $0.60) / 1M
    finally:
        stop(proc)
    proc = start_alerts(stack, config, url, log)
    try:
        call()
        time.sleep(5)  # time enough for a wrong post: the first run's took under a second
    finally:
        stop(proc)
    assert len([p for p in posts if p.get("budget") == budget]) == 3
    assert "3 alerts already fired" in log.read_text()  # the second run read the fired log
