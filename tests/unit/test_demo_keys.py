"""The demo revokes the gateway keys it made (issue 20): none stays active after `aimeter up --demo` or `demo`."""

from __future__ import annotations

from datetime import UTC, datetime

from aimeter.gateway.keys import KeyFile, new_key, verify
from aimeter.local.demo import TEAMS, issue_demo_keys, revoke_demo_keys


def test_demo_keys_are_revoked_and_other_keys_are_left_alone(tmp_path) -> None:
    path = tmp_path / "keys.json"
    store = KeyFile(path)
    own, record = new_key("platform", "", "", datetime.now(UTC))
    store.save({record.key_id: record})

    keys = issue_demo_keys(store)
    assert len(keys) == len(TEAMS)
    assert all(verify(store.load(), key) is not None for key in keys.values())

    assert revoke_demo_keys(store, keys) == len(TEAMS)
    records = store.load()
    assert all(verify(records, key) is None for key in keys.values())  # refused from now on
    assert sum(1 for r in records.values() if r.revoked_at) == len(TEAMS)  # kept, listed as revoked
    assert verify(records, own) is not None  # the operator's own key is untouched
    assert revoke_demo_keys(store, keys) == 0  # a second call (up's finally) changes nothing
    assert revoke_demo_keys(store, {}) == 0
