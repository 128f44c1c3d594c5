"""`aimeter spend` reads the embedded store while the pricer process holds it (one chDB owner)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import openai
import pytest

from aimeter.local.stack import settings_env
from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration


def test_spend_by_team_while_pricer_owns_the_store(stack, clickhouse):
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key_for(stack, "finance-cli-test"),
                           max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "fake: prompt=1000000 completion=100000"}])
    raw.parse()
    wait_for_row(clickhouse, "SELECT 1 FROM usage_costs FINAL WHERE event_id = {id:UUID}",
                 {"id": raw.headers["x-aimeter-event-id"]})

    env = {**settings_env(stack.settings), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "aimeter", "spend", "--by", "team", "--since", "1h",
                          "--format", "json"], capture_output=True, text=True, env=env, timeout=60, check=True)
    rows = json.loads(out.stdout)  # data only: the title goes to stderr
    assert out.stderr.startswith("spend by team")
    mine = next(r for r in rows if r["team"] == "finance-cli-test")
    # gpt-4o: $2.50 per 1M input + $10 per 1M output -> 1M in + 100k out = $3.50.
    assert Decimal(mine["cost_usd"]) == Decimal("3.5")
    assert mine["requests"] == 1


def test_spend_rejects_unknown_dimension():
    out = subprocess.run([sys.executable, "-m", "aimeter", "spend", "--by", "colour"], capture_output=True, check=False,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "invalid choice: 'colour'" in out.stderr


def _spend(stack, *args: str) -> tuple[list[dict], str]:
    env = {**settings_env(stack.settings), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "aimeter", "spend", "--since", "1h", "--format", "json", *args],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    return json.loads(out.stdout), out.stderr


def test_spend_by_key_and_by_tag(stack, clickhouse):
    key = key_for(stack, "keys-test")
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    ids = []
    for tags, prompt in (("feature=search-box,env=prod", 1_000_000), ("feature=summaries", 2_000_000), ("", 500_000)):
        headers = {"X-Aimeter-Tags": tags} if tags else {}
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", extra_headers=headers,
            messages=[{"role": "user", "content": f"fake: prompt={prompt} completion=0"}])
        raw.parse()
        ids.append(raw.headers["x-aimeter-event-id"])
    for event_id in ids:
        wait_for_row(clickhouse, "SELECT 1 FROM usage_costs FINAL WHERE event_id = {id:UUID}", {"id": event_id})

    rows, title = _spend(stack, "--by", "key")
    assert title.startswith("spend by key")
    key_id = key.split("_")[1]
    mine = next(r for r in rows if r["key"] == key_id)
    # gpt-4o: $2.50 per 1M input tokens; 3.5M tokens over three requests.
    assert (mine["team"], mine["requests"], Decimal(mine["cost_usd"])) == ("keys-test", 3, Decimal("8.75"))

    rows, _ = _spend(stack, "--by", "tag:feature")
    by_tag = {r["tag"]: r for r in rows}
    assert Decimal(by_tag["search-box"]["cost_usd"]) == Decimal("2.5")
    assert Decimal(by_tag["summaries"]["cost_usd"]) == Decimal("5")
    assert by_tag["(untagged)"]["requests"] >= 1  # every other request of the window, ours included


def test_spend_by_tag_needs_a_name():
    out = subprocess.run([sys.executable, "-m", "aimeter", "spend", "--by", "tag:"], capture_output=True, check=False,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "tag:<name>" in out.stderr
