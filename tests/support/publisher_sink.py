"""A stand-in for the gateway's publisher that keeps every event it is handed, for tests that run the gateway
app in-process and read the events it emitted."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []

    def publish_encoded(self, payload: bytes, event_id: str, started_at: datetime, ended_at: datetime) -> None:
        self.raw.append(payload)
        self.events.append(orjson.loads(payload))

    def accepting(self) -> bool:
        return True

    def metrics(self) -> dict[str, float]:
        return {}

    def wait(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events
