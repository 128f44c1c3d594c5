"""The gateway's fast event encoder writes what the pydantic UsageEvent writes, for any valid event.

The model is the contract; the encoder only skips re-validating values the gateway already
validated. Hypothesis generates events (labels with quotes, escapes and non-ASCII, every enum,
aware times with and without microseconds, valid token subsets, tags, compute seconds) and each
encoding must validate against the model and equal ``model_dump_json()`` byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aimeter.events import Attribution, Deployment, Status, TokenUsage, UsageEvent, UsageSource
from aimeter.events.ids import new_event_id
from aimeter.events.usage import MAX_FLAGS_LEN, MAX_LABEL_LEN, MAX_PROBLEM_LEN, MAX_TAG_LEN, MAX_TAGS
from aimeter.gateway.event_json import FIELDS, encode_usage_event

labels = st.text(max_size=MAX_LABEL_LEN)
tag_text = st.text(min_size=1, max_size=MAX_TAG_LEN)
# hypothesis takes naive bounds and attaches the zones itself
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),  # noqa: DTZ001
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]))
counts = st.integers(0, 2**40)


@st.composite
def usages(draw: st.DrawFn) -> TokenUsage:
    inputs, outputs = draw(counts), draw(counts)
    read = draw(st.integers(0, inputs))
    creation = draw(st.integers(0, inputs - read))
    five = draw(st.integers(0, creation))
    audio = draw(st.integers(0, inputs))
    reasoning = draw(st.integers(0, outputs))
    return TokenUsage(input_tokens=inputs, cache_read_input_tokens=read, cache_creation_input_tokens=creation,
                      cache_creation_5m_input_tokens=five, cache_creation_1h_input_tokens=creation - five,
                      input_audio_tokens=audio, input_image_tokens=draw(st.integers(0, inputs - audio)),
                      output_tokens=outputs, reasoning_output_tokens=reasoning,
                      output_audio_tokens=draw(st.integers(0, outputs - reasoning)))


attributions = st.builds(Attribution, team=labels, project=labels, user=labels, api_key_id=labels,
                         tags=st.dictionaries(tag_text, tag_text, max_size=MAX_TAGS))
events = st.fixed_dictionaries({
    "event_id": st.builds(lambda: str(new_event_id())), "gateway_id": labels, "started_at": times,
    "first_token_at": st.none() | times, "ended_at": times, "api": labels, "backend": labels, "provider": labels,
    "deployment": st.sampled_from(Deployment), "model_requested": labels, "model_served": labels,
    "stream": st.booleans(), "status": st.sampled_from(Status), "http_status": st.integers(0, 999),
    "usage_source": st.sampled_from(UsageSource), "usage": usages(),
    "backend_compute_seconds": st.none() | st.floats(0, 1e9, allow_nan=False) | st.sampled_from([0.0, 1e-7, 0.1]),
    "attribution": attributions, "usage_problem": st.text(max_size=MAX_PROBLEM_LEN),
    "upstream_error_type": labels, "usage_flags": st.text(max_size=MAX_FLAGS_LEN),
    "credential_id": labels, "upstream_project": labels, "service_tier": labels,
})


@settings(max_examples=400, deadline=None)
@given(events)
def test_fast_encoding_equals_the_models_own(fields):
    fast = encode_usage_event(**fields)
    model = UsageEvent(**fields)
    assert UsageEvent.model_validate_json(fast) == model
    assert fast == model.model_dump_json().encode()


def test_the_encoder_follows_the_models_field_order():
    assert tuple(UsageEvent.model_fields) == FIELDS
    fields = {"event_id": str(new_event_id()), "gateway_id": "gw", "started_at": datetime.now(UTC),
              "first_token_at": None, "ended_at": datetime.now(UTC), "api": "openai.chat", "backend": "oa",
              "provider": "openai", "deployment": Deployment.PROPRIETARY, "model_requested": "gpt-4o",
              "model_served": "gpt-4o-2024", "stream": False, "status": Status.OK, "http_status": 200,
              "usage_source": UsageSource.REPORTED, "usage": TokenUsage(input_tokens=3),
              "backend_compute_seconds": None, "attribution": Attribution(team="t", tags={"k": "v"})}
    assert list(orjson.loads(encode_usage_event(**fields))) == list(FIELDS)


@pytest.mark.parametrize(("field", "bad"), [("model_requested", "m" * (MAX_LABEL_LEN + 1)), ("http_status", 1000),
                                            ("gateway_id", "g" * 500), ("backend_compute_seconds", -1.0),
                                            ("usage_problem", "p" * (MAX_PROBLEM_LEN + 1)),
                                            ("upstream_error_type", "e" * (MAX_LABEL_LEN + 1)),
                                            ("usage_flags", "f" * (MAX_FLAGS_LEN + 1)),
                                            ("credential_id", "c" * (MAX_LABEL_LEN + 1)),
                                            ("service_tier", "t" * (MAX_LABEL_LEN + 1))])
def test_values_out_of_bounds_go_through_the_model_and_are_refused(field, bad):
    fields = {"event_id": str(new_event_id()), "gateway_id": "gw", "started_at": datetime.now(UTC),
              "first_token_at": None, "ended_at": datetime.now(UTC), "api": "openai.chat", "backend": "oa",
              "provider": "openai", "deployment": Deployment.PROPRIETARY, "model_requested": "gpt-4o",
              "model_served": "", "stream": False, "status": Status.OK, "http_status": 200,
              "usage_source": UsageSource.NONE, "usage": TokenUsage(), "backend_compute_seconds": None,
              "attribution": Attribution(), field: bad}
    with pytest.raises(ValidationError):
        encode_usage_event(**fields)


def test_an_event_without_the_diagnosis_fields_is_still_v1():
    """usage_problem, upstream_error_type and usage_flags were added as optional: older events still validate."""
    old = {"schema_version": "1", "event_id": str(new_event_id()), "started_at": "2026-12-01T00:00:00Z",
           "ended_at": "2026-12-01T00:00:01Z", "api": "openai.chat", "backend": "oa", "provider": "openai",
           "deployment": "proprietary", "model_requested": "gpt-4o", "status": "ok", "http_status": 200,
           "usage_source": "reported"}
    event = UsageEvent.model_validate(old)
    assert (event.usage_problem, event.upstream_error_type, event.usage_flags) == ("", "", "")
    # The provider-account fields (issue 19) were added the same way.
    assert (event.credential_id, event.upstream_project, event.service_tier) == ("", "", "")
