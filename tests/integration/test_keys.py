"""Gateway-issued keys: required, attributed, revocable, and only ever stored as hashes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from aimeter.events import KEYS_TOPIC
from aimeter.local.stack import settings_env
from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration
MESSAGES = [{"role": "user", "content": "fake: prompt=10 completion=5"}]


def test_missing_key_is_401_in_openai_shape(stack):
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
    request = urllib.request.Request(f"{stack.gateway_url}/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    error = json.loads(caught.value.read())["error"]
    assert error["code"] == "invalid_api_key"
    assert "missing gateway API key" in error["message"]


def test_unknown_key_is_401(stack):
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="am_nosuchkey_secret", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="unknown or revoked"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_key_attributes_team_and_a_header_cannot_change_it(stack, clickhouse):
    key = key_for(stack, "research", "evals")
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="X-Aimeter-Team"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                       extra_headers={"X-Aimeter-Team": "someone-else"})
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, user="alice", extra_headers={"X-Aimeter-Tags": "env=prod,feature=qa"})
    raw.parse()
    row = wait_for_row(clickhouse, "SELECT team, project, user, api_key_id, tags FROM usage_events FINAL "
                                   "WHERE event_id = {id:UUID}", {"id": raw.headers["x-aimeter-event-id"]})[0]
    assert row[:3] == ("research", "evals", "alice")
    assert key.split("_")[1] == row[3]  # the key id, never the key
    assert row[4] == {"env": "prod", "feature": "qa"}


def test_bad_attribution_header_is_400_naming_it(stack):
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key_for(stack, "search", "ranking"),
                           max_retries=0)
    with pytest.raises(openai.BadRequestError, match="X-Aimeter-Project"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                       extra_headers={"X-Aimeter-Project": "x" * 500})


def test_created_key_works_and_revoked_key_stops_working(stack):
    env = {**settings_env(stack.settings), "PATH": "/usr/bin:/bin"}
    aimeter = [sys.executable, "-m", "aimeter", "keys"]
    created = subprocess.run([*aimeter, "create", "--team", "keys-test", "--project", "p1"], env=env,
                             capture_output=True, text=True, check=True, timeout=60)
    key = created.stdout.splitlines()[0]
    key_id = key.split("_")[1]
    stored = topic_values(stack.settings.kafka_bootstrap, key_id)
    assert stored  # the keys topic holds the key's record ...
    assert all(key.split("_")[2] not in value for value in stored)  # ... only the salted hash, never the secret
    assert all(json.loads(value)["digest"] for value in stored)

    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)
    _eventually(lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    subprocess.run([*aimeter, "revoke", key_id], env=env, check=True, timeout=60, capture_output=True)

    def rejected() -> None:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _eventually(rejected)


def topic_values(bootstrap: str, key_id: str) -> list[str]:
    """Every value the keys topic holds for ``key_id``, read raw from the beginning."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keys-test-reader", "enable.auto.commit": False})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(KEYS_TOPIC, 0), timeout=10)
        consumer.assign([TopicPartition(KEYS_TOPIC, 0, OFFSET_BEGINNING)])
        values, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() == key_id.encode():
                values.append(msg.value().decode())
            if msg.offset() + 1 >= high:
                return values
        raise AssertionError(f"the keys topic was not read to offset {high} within 30 s")
    finally:
        consumer.close()


def _eventually(check, timeout: float = 10.0) -> None:
    """Key changes reach the gateway well within this."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except (AssertionError, openai.APIError, pytest.fail.Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
