"""`aimeter spend` reads the embedded store while the pricer process holds it (one chDB owner)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import openai
import pytest

from aimeter.local.stack import settings_env
from tests.integration.conftest import key_for, wait_for_row

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
