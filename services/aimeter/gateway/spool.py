"""A durable local spool for events Kafka could not take, so a broker outage loses nothing.

Format: append-only JSON Lines, one event per line. Each append is flushed and fsync'ed
before returning: spooling only happens on the failure path, so durability wins over speed.
The spool is bounded; when full, or when the disk is (ENOSPC, EIO), ``append`` returns False
and the caller decides (the publisher keeps the event in memory and in the journal, and counts
it). A write that failed half-way is cut back, and a torn last line left by a crash is cut on
open, so the file only ever holds whole events.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from aimeter.gateway.journal import read_records, truncate_torn_tail

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: Path, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.last_error = ""
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        for existing in (path, self._replaying):
            if existing.exists() and (removed := truncate_torn_tail(existing)):
                log.warning("spool %s: cut %d bytes of a torn last line", existing, removed)

    @property
    def _replaying(self) -> Path:
        return self.path.with_suffix(self.path.suffix + ".replaying")

    def append(self, payload: bytes) -> bool:
        """Persist one event; False when the spool or its disk is full (``last_error`` says which)."""
        line = payload.rstrip(b"\n") + b"\n"
        with self._lock:
            size = self.depth_bytes()
            if size + len(line) > self.max_bytes:
                self.last_error = f"spool full ({size} of {self.max_bytes} bytes)"
                return False
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                self.last_error = f"cannot open the spool: {exc.strerror}"
                return False
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(28, "short write")
                os.fsync(fd)
            except OSError as exc:
                self.last_error = f"cannot write the spool: {exc.strerror or exc}"
                try:
                    os.ftruncate(fd, size)  # never leave half an event behind
                except OSError as cut_exc:
                    log.error("spool %s: could not cut a failed write back (%s)", self.path, cut_exc)
                return False
            finally:
                os.close(fd)
        return True

    def depth_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def take(self) -> Iterator[bytes]:
        """Move the spool aside and yield its events; the caller re-publishes and re-spools failures.

        The ``.replaying`` file stays until the caller knows every event in it was acknowledged or
        spooled again (:meth:`finish_replay`): a crash before that replays it again at the next start,
        and the resulting duplicates collapse on ``event_id`` in ClickHouse.
        """
        replaying = self._replaying
        with self._lock:
            if self.path.exists() and not replaying.exists():
                self.path.rename(replaying)
        if not replaying.exists():
            return
        yield from read_records(replaying)

    def finish_replay(self) -> None:
        self._replaying.unlink(missing_ok=True)
