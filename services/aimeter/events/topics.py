"""Kafka topic names and the CloudEvents (Kafka binding, binary mode) headers."""

from __future__ import annotations

USAGE_TOPIC = "ai.usage.v1"
DLQ_TOPIC = "ai.usage.dlq.v1"
# Compacted: the latest record per key is the state (a gateway key by key id; a gateway's count for an hour).
KEYS_TOPIC = "ai.keys.v1"
COUNTS_TOPIC = "ai.counts.v1"
CE_TYPE = "dev.aimeter.usage.v1"
CONTENT_TYPE = "application/json"


def cloudevent_headers(event_id: str, source: str, time_iso: str) -> list[tuple[str, str | bytes | None]]:
    """Binary-mode CloudEvents headers: the event JSON stays the plain message value."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_type", CE_TYPE.encode()),
        ("ce_source", source.encode()),
        ("ce_time", time_iso.encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
