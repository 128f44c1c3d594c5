"""Pure parts of keys and upstream targeting: hashing, constant-time verify, URL/credential placement."""

from datetime import UTC, datetime

import pytest

from aimeter.config import parse_config
from aimeter.gateway.attribution import AttributionError, attribution_for
from aimeter.gateway.keys import new_key, split_key, verify
from aimeter.gateway.providers import match_route, upstream_headers, upstream_target

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def test_key_round_trip_and_revocation():
    key, record = new_key("search", "ranking", "", NOW)
    assert key.startswith(f"am_{record.key_id}_")
    assert key.split("_")[2] not in record.digest
    records = {record.key_id: record}
    assert verify(records, key) == record
    assert verify(records, key + "x") is None
    assert verify(records, "am_" + record.key_id + "_wrong") is None
    revoked = {record.key_id: record.__class__(**{**record.__dict__, "revoked_at": NOW.isoformat()})}
    assert verify(revoked, key) is None


@pytest.mark.parametrize("junk", ["", "sk-openai", "am__x", "am_id_", "am_a_b_c", "Bearer am_x_y"])
def test_malformed_keys_are_not_looked_up(junk):
    assert split_key(junk) is None or verify({}, junk) is None


def test_team_comes_from_the_key():
    _, record = new_key("search", "", "", NOW)
    got = attribution_for(record, {"x-aimeter-project": "p", "x-aimeter-tags": "a=1"}, "bob")
    assert (got.team, got.project, got.user, got.api_key_id, got.tags) == ("search", "p", "bob", record.key_id,
                                                                            {"a": "1"})
    with pytest.raises(AttributionError, match="X-Aimeter-Team"):
        attribution_for(record, {"x-aimeter-team": "other"})


@pytest.mark.parametrize("value", ["a\x00b", "ünïcode", "x" * 200, "a,b"])
def test_hostile_attribution_values_are_rejected(value):
    with pytest.raises(AttributionError):
        attribution_for(None, {"x-aimeter-project": value})


CONFIG = parse_config("""
backends:
  oa: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  local: {kind: openai_compatible, base_url: "http://10.0.0.5:8000/v1/", deployment: self_hosted, provider: vllm,
          gpu: {gpu_type: L4, gpu_count: 1, usd_per_gpu_hour: "0.8", sustained_tokens_per_second: 400}}
models:
  gpt-4o: {backend: oa}
""")


def test_openai_target_and_bearer_credential():
    match = match_route("/v1/chat/completions")
    assert upstream_target(CONFIG.backends["oa"], match, "gpt-4o", "") == "https://api.openai.com/v1/chat/completions"
    assert upstream_target(CONFIG.backends["local"], match, "m", "") == "http://10.0.0.5:8000/v1/chat/completions"
    headers = upstream_headers(CONFIG.backends["oa"], "sk-real", {"authorization": "Bearer am_x_y", "x-evil": "1"})
    assert headers == {"content-type": "application/json", "authorization": "Bearer sk-real"}


def test_client_key_is_never_forwarded_when_backend_has_no_credential():
    headers = upstream_headers(CONFIG.backends["local"], None, {"authorization": "Bearer am_x_y"})
    assert "authorization" not in headers


def test_unknown_paths_do_not_match():
    assert match_route("/v1/chat/completions/../../admin") is None
    assert match_route("/etc/passwd") is None


def test_attribution_is_shared_for_identical_inputs_and_recomputed_otherwise():
    _, record = new_key("search", "", "", NOW)
    first = attribution_for(record, {"x-aimeter-project": "p"}, "bob")
    assert attribution_for(record, {"x-aimeter-project": "p"}, "bob") is first  # cached: frozen, safe to share
    other = attribution_for(record, {"x-aimeter-project": "q"}, "bob")
    assert (other.project, first.project) == ("q", "p")
    assert attribution_for(record, {"x-aimeter-project": "p"}, "alice").user == "alice"
    assert attribution_for(None, {"x-aimeter-team": "t2"}).team == "t2"
    _, other_key = new_key("research", "", "", NOW)
    assert attribution_for(other_key, {"x-aimeter-project": "p"}, "bob").team == "research"
    for _ in range(2):  # an invalid input raises every time; nothing is cached for it
        with pytest.raises(AttributionError):
            attribution_for(record, {"x-aimeter-project": "bad\tvalue"})
