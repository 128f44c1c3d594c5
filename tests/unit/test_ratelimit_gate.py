"""The gateway's rate-limit adapter (gateway/ratelimit_gate.py): which limits apply to a request, the share each
replica enforces, what a request reserves, and the headers it carries."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from aimeter.config import ConfigError, parse_config
from aimeter.gateway.ratelimit import Limit
from aimeter.gateway.ratelimit_gate import SMALL_BODY, RateGate, RateLimit, RateLimits


@dataclass(frozen=True)
class Key:
    """The fields of a key record the gate reads (the key store's record carries ``limits`` as this does)."""

    key_id: str
    team: str = "search"
    limits: dict[str, Any] = field(default_factory=dict)


def test_a_key_records_limits_win_over_the_config_and_junk_values_are_ignored():
    gate = RateGate(RateLimits(keys={"k1": RateLimit(rpm=10, tpm=1000)}, teams={"search": RateLimit(rpm=100)}))
    assert gate.scopes(Key("k1"), "search") == [("key:k1", Limit(10, 1000)), ("team:search", Limit(100, 0))]
    assert gate.scopes(Key("k1", limits={"rpm": 3, "budgets": []}), "search")[0] == ("key:k1", Limit(3, 0))
    assert gate.scopes(Key("k1", limits={"rpm": "3", "tpm": -1, "x": 1}), "search")[0] == ("key:k1", Limit(10, 1000))
    assert gate.scopes(Key("k2"), "other") == []
    assert gate.scopes(None, "search") == [("team:search", Limit(100, 0))]  # auth=none: the team's limit only


def test_a_changed_key_record_is_read_again():
    gate = RateGate(None)
    assert gate.scopes(Key("k1", limits={"rpm": 5}), "t") == [("key:k1", Limit(5, 0))]
    assert gate.scopes(Key("k1", limits={"rpm": 7}), "t") == [("key:k1", Limit(7, 0))]


def test_replicas_divide_every_limit_and_never_to_zero():
    gate = RateGate(RateLimits(replicas=3, teams={"t": RateLimit(rpm=10, tpm=2)}))
    assert gate.scopes(None, "t") == [("team:t", Limit(3, 1))]
    assert gate.scopes(Key("k", limits={"rpm": 9}), "x") == [("key:k", Limit(3, 0))]


def test_a_request_reserves_its_prompt_and_its_output_cap():
    gate = RateGate(RateLimits(default_output_tokens=100))
    chat = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50, "n": 2}
    size = len(orjson.dumps(chat))
    assert gate.reserve(chat, size, "openai.chat") == -(-size // 4) + 100  # n=2 choices of 50
    del chat["max_tokens"]
    assert gate.reserve(chat, size, "openai.chat") == -(-size // 4) + 100  # the default output
    assert gate.reserve({"input": "hello"}, 16, "openai.embeddings") == 4  # embeddings generate nothing


def test_a_large_body_reserves_its_prompt_text_not_its_base64_images():
    image = base64.b64encode(b"\0" * (SMALL_BODY * 2)).decode()
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}]}], "max_tokens": 10}
    size = len(orjson.dumps(body))
    assert size > SMALL_BODY
    assert gate_reserve(body, size) < 20


def gate_reserve(body: dict[str, Any], size: int) -> int:
    return RateGate(None).reserve(body, size, "openai.chat")


def test_stamp_replaces_the_upstreams_own_rate_limit_headers():
    gate = RateGate(RateLimits(teams={"t": RateLimit(rpm=5)}))
    grant = gate.admit(None, "t", {}, 2, "openai.chat")
    assert grant is not None
    message = {"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"x-ratelimit-remaining-requests", b"9999"),
        (b"retry-after", b"3")]}
    grant.stamp(message)
    names = [name for name, _ in message["headers"]]
    assert names.count(b"x-ratelimit-remaining-requests") == 1
    assert dict(message["headers"])[b"x-ratelimit-remaining-requests"] == b"4"
    assert b"retry-after" in names  # the upstream's own retry advice is passed on


def test_a_request_larger_than_the_whole_limit_is_told_it_never_fits():
    gate = RateGate(RateLimits(teams={"t": RateLimit(tpm=100)}))
    grant = gate.admit(None, "t", {"max_tokens": 500}, 20, "openai.chat")
    assert grant is not None
    assert "can never be admitted" in grant.refusal
    assert b"retry-after" not in dict(grant.headers)
    assert dict(grant.headers)[b"x-should-retry"] == b"false"  # the SDKs do not retry what can never fit


def test_the_config_file_takes_rate_limits_and_rejects_unknown_fields():
    base = "backends: {}\nmodels: {}\n"
    config = parse_config(base + "rate_limits: {replicas: 2, teams: {search: {rpm: 600, tpm: 100000}}}\n")
    assert config.rate_limits is not None
    assert config.rate_limits.teams["search"] == RateLimit(rpm=600, tpm=100000)
    with pytest.raises(ConfigError, match="rate_limits"):
        parse_config(base + "rate_limits: {teams: {search: {rpm: 0}}}\n")
    with pytest.raises(ConfigError, match="rate_limits"):
        parse_config(base + "rate_limits: {teams: {search: {rpn: 5}}}\n")
