"""Attribution is never dropped silently (issue 14, point 4, gateway side).

A header that contradicts what the key pins is refused, naming the conflict; the body's user (OpenAI's
``user``, Anthropic's ``metadata.user_id``) never fails a request and is kept as sent.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aimeter.events import Attribution
from aimeter.events.usage import MAX_LABEL_LEN
from aimeter.gateway.attribution import AttributionError, attribution_for, body_user_label
from aimeter.gateway.keys import new_key

NOW = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.mark.parametrize(("header", "field"), [("x-aimeter-project", "project"), ("x-aimeter-user", "user")])
def test_a_header_that_contradicts_the_keys_pin_is_refused_naming_both(header, field):
    _, record = new_key("search", "ranking", "svc-bot", NOW)
    with pytest.raises(AttributionError) as refused:
        attribution_for(record, {header: "someone-else"})
    message = str(refused.value)
    assert refused.value.header == header.title()
    assert "someone-else" in message
    assert repr({"project": "ranking", "user": "svc-bot"}[field]) in message
    assert record.key_id in message


def test_a_header_equal_to_the_pin_or_on_an_unpinned_key_is_fine():
    _, pinned = new_key("search", "ranking", "svc-bot", NOW)
    got = attribution_for(pinned, {"x-aimeter-project": "ranking", "x-aimeter-user": " svc-bot "})
    assert (got.project, got.user) == ("ranking", "svc-bot")
    _, open_key = new_key("search", "", "", NOW)
    assert attribution_for(open_key, {"x-aimeter-project": "anything"}).project == "anything"


@pytest.mark.parametrize(("sent", "kept"), [
    ("Doe, Jane", "Doe, Jane"),
    ("josé.garcía@example.com", "josé.garcía@example.com"),
    ("user#42 (beta); tier=gold", "user#42 (beta); tier=gold"),
    ('say "hi" & <b>', 'say "hi" & <b>'),
    ("line1\nline2\x00", "line1\\nline2\\x00"),
    ("back\\slash", "back\\\\slash"),
    ("ユーザー", "ユーザー"),
])
def test_the_body_user_is_kept_faithfully(sent, kept):
    for key in (None, new_key("search", "", "", NOW)[1]):
        got = attribution_for(key, {}, sent)
        assert got.user == kept
        Attribution.model_validate(got.model_dump())  # a valid label for the event


def test_a_long_body_user_is_clipped_but_stays_distinct():
    first, second = "a" * 300 + "1", "a" * 300 + "2"
    labels = {body_user_label(first), body_user_label(second)}
    assert len(labels) == 2
    assert all(len(label) == MAX_LABEL_LEN for label in labels)
    assert body_user_label(first) == body_user_label(first)


def test_the_body_user_never_beats_a_pin_or_a_header_and_never_fails():
    _, pinned = new_key("search", "", "svc-bot", NOW)
    assert attribution_for(pinned, {}, "Doe, Jane").user == "svc-bot"
    assert attribution_for(None, {"x-aimeter-user": "alice"}, "Doe, Jane").user == "alice"
