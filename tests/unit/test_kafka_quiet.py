"""librdkafka's log reduced to one line per state change, and topic creation that never kills its thread."""

from __future__ import annotations

import logging
from unittest import mock

import pytest

import aimeter.kafka_admin as kafka_admin
from aimeter.kafka_log import KafkaLog

FAIL = ("FAIL", "rdkafka#producer-1", "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused")


def test_an_outage_is_two_lines_with_the_count_between(caplog: pytest.LogCaptureFixture) -> None:
    kafka_log = KafkaLog("gateway", "127.0.0.1:9")
    with caplog.at_level(logging.INFO, logger="aimeter.kafka"):
        for _ in range(870):
            kafka_log.log(logging.ERROR, "%s [%s] %s", *FAIL)
        assert kafka_log.down
        kafka_log.answered()
        kafka_log.log(logging.ERROR, "%s [%s] %s", *FAIL)  # queued before the broker answered: not a new outage
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "unreachable" in lines[0]
    assert "answers again" in lines[1]
    assert "869 librdkafka messages suppressed" in lines[1]
    assert not kafka_log.down


def test_other_warnings_are_passed_on_once(caplog: pytest.LogCaptureFixture) -> None:
    kafka_log = KafkaLog("pricer", "127.0.0.1:9")
    with caplog.at_level(logging.INFO, logger="aimeter.kafka"):
        for _ in range(3):
            kafka_log.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#consumer-1", "odd setting")
    assert [r.getMessage() for r in caplog.records] == ["pricer: librdkafka: odd setting"]


def test_existing_topics_create_nothing() -> None:
    class Admin:
        def __init__(self, *_: object, **__: object) -> None:
            pass

        def list_topics(self, timeout: float) -> mock.Mock:
            return mock.Mock(topics=dict.fromkeys(kafka_admin.LOG_TOPICS + kafka_admin.COMPACTED_TOPICS, 1))

        def create_topics(self, *_: object, **__: object) -> None:
            raise AssertionError("nothing to create")

    with mock.patch.object(kafka_admin, "AdminClient", Admin):
        assert kafka_admin.ensure_topics("127.0.0.1:9") == []
