"""A durable local spool for events Kafka could not take, so a broker outage loses nothing.

Format: append-only JSON Lines, one event per line. Each append is flushed and fsync'ed
before returning: spooling only happens on the failure path, so durability wins over speed.
The spool is bounded; when full, ``append`` returns False and the caller counts a drop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path


class Spool:
    def __init__(self, path: Path, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, payload: bytes) -> bool:
        """Persist one event; False when the spool is full (the configured policy decides what then)."""
        line = payload.rstrip(b"\n") + b"\n"
        with self._lock:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(line) > self.max_bytes:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return True

    def depth_bytes(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def take(self) -> Iterator[bytes]:
        """Move the spool aside and yield its events; the caller re-publishes and re-spools failures.

        A crash mid-replay leaves the ``.replaying`` file, which the next ``take`` replays again;
        the resulting duplicates collapse on ``event_id`` in ClickHouse.
        """
        replaying = self.path.with_suffix(self.path.suffix + ".replaying")
        with self._lock:
            if self.path.exists() and not replaying.exists():
                self.path.rename(replaying)
        if not replaying.exists():
            return
        with replaying.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip(b"\n")
        replaying.unlink()
