"""A key's budget, set with ``aimeter budgets set --key`` into the key store, is enforced by the running gateway
within seconds (no restart), shown by ``aimeter budgets show`` with its spent, reserved and remaining, and
lifted by ``--delete``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from typing import Any

import openai
import pytest

from aimeter.local.stack import Stack, settings_env
from aimeter.metrics_auth import ensure_token

pytestmark = pytest.mark.integration
FILLER = " ".join(["abcdefghij"] * 12)


def aimeter(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(stack.settings), "PATH": "/usr/bin:/bin", "AIMETER_KAFKA_BOOTSTRAP": stack.bootstrap}
    return subprocess.run([sys.executable, "-m", "aimeter", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def gateway_budgets(stack: Stack) -> list[dict[str, Any]]:
    token = ensure_token(stack.settings.resolved_metrics_token_file)
    request = urllib.request.Request(f"{stack.gateway_url}/budgets", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())["budgets"]


def wait_until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout} s: {what}")


def ask(client: openai.OpenAI) -> int:
    """200, or 429 when the key's budget refused (any other refusal is an error)."""
    try:
        client.chat.completions.create(model="gpt-4o", max_tokens=1000, messages=[
            {"role": "user", "content": f"fake: completion=1000 {FILLER}"}])
    except openai.RateLimitError as exc:
        if "key-cap" not in exc.message:
            raise
        return 429
    return 200


def test_key_budget_from_the_key_store_set_shown_and_deleted(stack: Stack, clickhouse: Any) -> None:
    created = aimeter(stack, "keys", "create", "--team", "budget-keys")
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[0].strip()
    key_id = key.split("_")[1]
    put = aimeter(stack, "budgets", "set", "key-cap", "--key", key_id, "--usd", "0.03", "--period", "day",
                  "--timezone", "Asia/Kolkata")
    assert put.returncode == 0, put.stderr
    wait_until(lambda: any(b["name"] == "key-cap" for b in gateway_budgets(stack)), "the gateway enforces key-cap")
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    answered = 0
    while ask(client) == 200:  # ~$0.01 each against $0.03
        answered += 1
        assert answered < 10, "the key's budget never refused"
    assert answered >= 1
    rows: list[Any] = []
    for _ in range(240):
        rows = clickhouse.query("SELECT count(), toString(sum(cost_usd)) FROM usage_costs FINAL WHERE api_key_id = "
                                "{k:String}", parameters={"k": key_id}).result_rows
        if rows[0][0] >= answered:
            break
        time.sleep(0.25)
    assert rows[0][0] == answered
    ledger = Decimal(rows[0][1])
    shown = aimeter(stack, "budgets", "show", "key-cap", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout.split("\nreserved is partial")[0])[0]
    print(f"\nkey budget: {answered} requests answered, then refused; show: {row}")
    assert Decimal(row["spent"]) == ledger.quantize(Decimal("0.000001"))
    assert Decimal(row["reserved"]) == 0
    assert Decimal(row["remaining"]) == (Decimal("0.03") - ledger).quantize(Decimal("0.000001"))
    assert row["kept in"] == "key store"
    assert row["resets"].endswith("18:30 UTC")  # midnight in Kolkata
    listed = json.loads(aimeter(stack, "budgets", "list", "--format", "json").stdout)
    assert {"name": "key-cap", "scope": "key", "value": key_id} == {k: listed[-1][k] for k in ("name", "scope",
                                                                                                 "value")}
    removed = aimeter(stack, "budgets", "set", "key-cap", "--key", key_id, "--delete")
    assert removed.returncode == 0, removed.stderr
    wait_until(lambda: ask(client) == 200, "the key is served again once its budget is deleted")
