"""librdkafka's log and error callbacks, reduced to one line per state change (broker down, broker back).

Left alone, librdkafka writes a line per failed connection attempt and per error event, about twenty a
second per client while a broker is away (~870 lines in one short outage). Given as ``logger`` and
``error_cb`` of a client, this object logs the first of them as "unreachable", counts the rest, and
logs "answers again" with the count and the duration once the owner saw the cluster answer
(:meth:`answered`). Lines that are not about reaching the cluster are passed on, each distinct one once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError

log = logging.getLogger("aimeter.kafka")
_FATAL = (KafkaError._FATAL,)
# librdkafka queues its log lines until the client's next poll(): a failure logged just before the cluster
# answered can arrive just after. Within this long after "answers again" such lines are counted, not a new outage.
STALE_S = 3.0
# librdkafka log facilities that mean "cannot reach or lost the broker"
_UNREACHABLE = frozenset({"FAIL", "ERROR", "BROKERFAIL", "REQTMOUT", "CONNECT", "DISCONNECT"})


class KafkaLog:
    """Thread-safe: librdkafka calls it from poll()/consume(), the owner from its own thread."""

    def __init__(self, who: str, bootstrap: str) -> None:
        self.who = who
        self.bootstrap = bootstrap
        self.down_since: float | None = None
        self.up_since = -STALE_S
        self.suppressed = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    # confluent-kafka calls logger.log(level, "%s [%s] %s", facility, client name, message)
    def log(self, level: int, fmt: str, *args: object) -> None:
        facility, message = (str(args[0]), str(args[-1])) if len(args) >= 2 else ("", fmt)
        if facility in _UNREACHABLE:
            self._went_down(message)
        elif level >= logging.WARNING:
            self._once(level, message)

    def error(self, err: KafkaError) -> None:
        """``error_cb``: fatal errors are logged every time; transport errors mark the cluster down."""
        if err.fatal() or err.code() in _FATAL:
            log.error("%s: fatal Kafka error: %s", self.who, err)
            return
        self._went_down(err.str())

    def _went_down(self, message: str) -> None:
        with self._lock:
            if self.down_since is not None or time.monotonic() - self.up_since < STALE_S:
                self.suppressed += 1
                return
            self.down_since = time.monotonic()
            self.suppressed = 0
        log.warning("%s: Kafka at %s unreachable (%s); retrying in the background, one line when it answers",
                    self.who, self.bootstrap, message)

    def _once(self, level: int, message: str) -> None:
        with self._lock:
            if message in self._seen or len(self._seen) > 1000:
                return
            self._seen.add(message)
        log.log(level, "%s: librdkafka: %s", self.who, message)

    def answered(self) -> None:
        """The owner saw the cluster answer (metadata, an assignment, a delivery)."""
        with self._lock:
            since, self.down_since = self.down_since, None
            suppressed = self.suppressed
            if since is not None:
                self.up_since, self.suppressed = time.monotonic(), 0
        if since is not None:
            log.warning("%s: Kafka at %s answers again after %.1f s; %d librdkafka messages suppressed meanwhile",
                        self.who, self.bootstrap, time.monotonic() - since, suppressed)

    def client_config(self) -> dict[str, Any]:
        return {"logger": self, "error_cb": self.error}


def quiet_client(bootstrap: str, who: str = "kafka-admin") -> dict[str, Any]:
    """Config for a short-lived client (admin, metadata): its log reduced the same way."""
    return KafkaLog(who, bootstrap).client_config()
