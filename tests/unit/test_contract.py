"""The event contract: schema file in sync, subsets enforced, CloudEvents headers present."""

import pytest
from pydantic import ValidationError

from aimeter.events import TokenUsage, cloudevent_headers
from aimeter.events.schema import SCHEMA_PATH, render_schema


def test_committed_json_schema_matches_the_model():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), "run `aimeter schema` and commit the result"


def test_cache_tokens_cannot_exceed_input():
    with pytest.raises(ValidationError, match="exceed input_tokens"):
        TokenUsage(input_tokens=5, cache_read_input_tokens=6)


def test_reasoning_cannot_exceed_output():
    with pytest.raises(ValidationError, match="output subsets"):
        TokenUsage(output_tokens=5, reasoning_output_tokens=6)


def test_cloudevents_binary_mode_headers():
    headers = dict(cloudevent_headers("id-1", "/aimeter/gateway/gw-1", "2026-11-28T00:00:00+00:00"))
    assert headers == {
        "ce_specversion": b"1.0", "ce_id": b"id-1", "ce_type": b"dev.aimeter.usage.v1",
        "ce_source": b"/aimeter/gateway/gw-1", "ce_time": b"2026-11-28T00:00:00+00:00",
        "content-type": b"application/json",
    }
