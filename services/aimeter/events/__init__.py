"""The contract: UsageEvent v1, topics and CloudEvents headers."""

from aimeter.events.topics import COUNTS_TOPIC, DLQ_TOPIC, KEYS_TOPIC, USAGE_TOPIC, cloudevent_headers
from aimeter.events.usage import (
    Attribution,
    Deployment,
    Status,
    TokenUsage,
    UsageEvent,
    UsageFlag,
    UsageSource,
)

__all__ = [
    "COUNTS_TOPIC",
    "DLQ_TOPIC",
    "KEYS_TOPIC",
    "USAGE_TOPIC",
    "Attribution",
    "Deployment",
    "Status",
    "TokenUsage",
    "UsageEvent",
    "UsageFlag",
    "UsageSource",
    "cloudevent_headers",
]
