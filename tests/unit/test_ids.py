"""Event ids are valid, time-ordered UUIDv7s that do not repeat."""

import time

from aimeter.events.ids import new_event_id


def test_version_variant_and_timestamp():
    before = time.time_ns() // 1_000_000
    event_id = new_event_id()
    after = time.time_ns() // 1_000_000
    assert event_id.version == 7
    assert event_id.variant == "specified in RFC 4122"
    assert before <= event_id.int >> 80 <= after


def test_no_repeats_and_no_drift_under_load():
    ids = [new_event_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert (ids[-1].int >> 80) <= time.time_ns() // 1_000_000  # never ahead of the clock
