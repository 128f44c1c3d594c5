"""The keys topic's record format (gateway/keys.py) and what a reader applies (keys_kafka.apply_message)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from aimeter.gateway.keys import MAX_LIMITS_BYTES, KeyRecordError, decode_record, encode_record, new_key, verify
from aimeter.gateway.keys_kafka import apply_message
from aimeter.keys_cli import import_plan

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def test_a_record_round_trips_with_its_limits_and_never_holds_the_secret():
    key, record = new_key("search", "ranking", "bot", NOW)
    record = replace(record, limits={"rpm": 60, "budgets": [{"usd": "10", "period": "month"}]})
    value = encode_record(record)
    assert key.split("_")[2] not in value.decode()
    assert json.loads(value)["v"] == 1
    decoded = decode_record(record.key_id.encode(), value)
    assert decoded == record
    assert verify({decoded.key_id: decoded}, key) is decoded
    assert hash(decoded) == hash(record)  # still hashable (the attribution cache keys on records)


def _value(record, **changes) -> bytes:
    data = json.loads(encode_record(record))
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize(("changes", "reason"), [
    ({"v": 2}, "version '2' is not 1"),
    ({"v": None}, "version"),
    ({"limits": {"pad": "x" * MAX_LIMITS_BYTES}}, "exceeds 16384"),
    ({"limits": [1]}, "limits is a JSON list"),
    ({"salt": "zz"}, "salt"),
    ({"digest": "00"}, "digest"),
    ({"team": ""}, "team is empty"),
    ({"team": 5}, "team is not a string"),
    ({"project": "p" * 129}, "project is longer than 128"),
    ({"extra": 1}, "unknown fields extra"),
])
def test_a_record_a_reader_must_not_trust_is_refused_naming_why(changes, reason):
    _, record = new_key("search", "", "", NOW)
    with pytest.raises(KeyRecordError, match=reason):
        decode_record(record.key_id.encode(), _value(record, **changes))


@pytest.mark.parametrize("value", [b"{", b"[]", b"null", b"1", b"[" * 50_000 + b"]" * 50_000, b"\xff\xfe"])
def test_junk_values_are_refused_without_raising_anything_else(value):
    with pytest.raises(KeyRecordError):
        decode_record(b"abc", value)


def test_the_message_key_must_be_the_records_key_id():
    _, record = new_key("search", "", "", NOW)
    with pytest.raises(KeyRecordError, match="differs"):
        decode_record(b"other", encode_record(record))
    with pytest.raises(KeyRecordError, match="differs"):
        decode_record(None, encode_record(record))


def test_encode_refuses_what_a_reader_would_refuse():
    _, record = new_key("search", "", "", NOW)
    with pytest.raises(KeyRecordError, match="exceeds"):
        encode_record(replace(record, limits={"pad": "x" * MAX_LIMITS_BYTES}))


def test_a_skipped_record_leaves_the_key_as_it_was_and_a_tombstone_removes_it():
    key, record = new_key("search", "", "", NOW)
    revoked = replace(record, revoked_at=NOW.isoformat())
    records = {record.key_id: revoked}
    problem = apply_message(records, record.key_id.encode(), _value(record, v=9), 7)  # an "un-revoke", bad version
    assert problem is not None
    assert "offset 7" in problem
    assert verify(records, key) is None  # still revoked
    assert apply_message(records, record.key_id.encode(), encode_record(record), 8) is None
    assert verify(records, key) is not None
    assert "tombstone" in (apply_message(records, record.key_id.encode(), None, 9) or "")
    assert verify(records, key) is None


def test_import_writes_new_and_changed_records_and_never_un_revokes():
    _, new = new_key("a", "", "", NOW)
    _, same = new_key("b", "", "", NOW)
    _, changed = new_key("c", "", "", NOW)
    _, revoked = new_key("d", "", "", NOW)
    current = {same.key_id: same, changed.key_id: replace(changed, project="old"),
               revoked.key_id: replace(revoked, revoked_at=NOW.isoformat())}
    plan = import_plan({r.key_id: r for r in (new, same, changed, revoked)}, current)
    assert sorted(r.key_id for r in plan.write) == sorted([new.key_id, changed.key_id])
    assert (plan.present, plan.kept_revoked) == (1, 1)
    with pytest.raises(ValueError, match="cannot be imported"):
        import_plan({new.key_id: replace(new, team="")}, {})
