"""A message the pricer can never process goes to the dead-letter topic with its reason; nothing stalls."""

from __future__ import annotations

import time
import uuid

import openai
import pytest
from confluent_kafka import Consumer, Producer

from aimeter.events import DLQ_TOPIC, USAGE_TOPIC
from tests.support.stack import key_for, wait_for_row

pytestmark = pytest.mark.integration


def test_poison_message_is_dead_lettered_and_the_partition_moves_on(stack, clickhouse, kafka_bootstrap):
    marker = uuid.uuid4().hex
    poison = f'{{"not": "a usage event", "marker": "{marker}"}}'.encode()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(USAGE_TOPIC, poison, key=b"poison")
    assert producer.flush(10) == 0

    # A valid request after the poison message is still metered: the partition was not blocked.
    client = openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key_for(stack, "search", "ranking"),
                           max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "fake: prompt=10 completion=5"}])
    raw.parse()
    wait_for_row(clickhouse, "SELECT 1 FROM usage_events FINAL WHERE event_id = {id:UUID}",
                 {"id": raw.headers["x-aimeter-event-id"]})

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"dlq-{marker}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([DLQ_TOPIC])
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() or marker.encode() not in (msg.value() or b""):
                continue
            assert msg.value() == poison  # dead-lettered as it was, for a human to inspect and replay
            reason = dict(msg.headers() or [])["x-aimeter-dlq-reason"].decode()
            assert "invalid UsageEvent v1" in reason
            return
    finally:
        consumer.close()
    pytest.fail("the poison message never reached the dead-letter topic")
