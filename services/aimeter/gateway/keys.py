"""Gateway-issued virtual keys: shown once, stored only as salted hashes, compared in constant time.

A key looks like ``am_<key id>_<secret>``. The id is public (it names the key in events and
listings); only ``sha256(salt || secret)`` is stored. The shared store is the compacted Kafka topic
``ai.keys.v1`` (keys_kafka.py): one record per key id, its value :func:`encode_record`'s JSON. This module
is the pure part (records, their wire form, verification) plus :class:`KeyFile`, the JSON file that is a
gateway's local snapshot of the topic, the store of ``AIMETER_KEYS_STORE=file`` and the input of
``aimeter keys import``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import string
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

PREFIX = "am"
_ID_CHARS = string.ascii_lowercase + string.digits
_SECRET_CHARS = string.ascii_letters + string.digits
RECORD_VERSION = 1
# Bounds on what a reader accepts from the topic: a record is a few hundred bytes; ``limits`` is filled by
# budget and rate-limit features and is opaque here, but it is held in every gateway's memory.
MAX_RECORD_BYTES = 64 * 1024
MAX_LIMITS_BYTES = 16 * 1024
MAX_LABEL = 128  # team, project, user: the usage event's label bound
_KEY_ID = re.compile(r"[a-z0-9]{1,64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    salt: str
    digest: str
    team: str
    project: str = ""
    user: str = ""
    created_at: str = ""
    revoked_at: str = ""
    # Per-key budgets and rate limits (e.g. {"budgets": [...], "rpm": N, "tpm": N}), written by the features
    # that enforce them; carried and bounded here, never interpreted. Treat as read-only.
    limits: dict[str, Any] = field(default_factory=dict, hash=False)  # records are hashed (attribution cache)

    @property
    def active(self) -> bool:
        return not self.revoked_at


class KeyRecordError(ValueError):
    """A keys-topic record this reader refuses; the message says why. It is skipped, never applied."""


_FIELDS = tuple(f.name for f in fields(KeyRecord))


def encode_record(record: KeyRecord) -> bytes:
    """The topic value of ``record`` (its key is the key id). Refuses what a reader would refuse."""
    value = json.dumps({"v": RECORD_VERSION, **asdict(record)}, separators=(",", ":"), sort_keys=True).encode()
    decode_record(record.key_id.encode(), value)
    return value


def decode_record(key: bytes | None, value: bytes) -> KeyRecord:
    """The record a topic message holds, or KeyRecordError naming the first problem (bounded work for any input)."""
    if len(value) > MAX_RECORD_BYTES:
        raise KeyRecordError(f"value of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise KeyRecordError(f"value is not JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise KeyRecordError(f"value is a JSON {type(data).__name__}, not an object")
    if data.get("v") != RECORD_VERSION:
        raise KeyRecordError(f"version {str(data.get('v'))[:20]!r} is not {RECORD_VERSION}")
    unknown = sorted(set(data) - {"v", *_FIELDS})
    if unknown:
        raise KeyRecordError(f"unknown fields {', '.join(u[:40] for u in unknown[:5])}")
    fields_ = {k: data[k] for k in _FIELDS if k in data}
    _check_strings(fields_)
    key_id = fields_.get("key_id", "")
    if key is None or key.decode(errors="replace") != key_id:
        raise KeyRecordError(f"message key {key!r:.80} differs from key_id {key_id!r:.80}")
    limits = fields_.get("limits", {})
    if not isinstance(limits, dict):
        raise KeyRecordError(f"limits is a JSON {type(limits).__name__}, not an object")
    size = len(json.dumps(limits, separators=(",", ":")))
    if size > MAX_LIMITS_BYTES:
        raise KeyRecordError(f"limits of {size} bytes exceeds {MAX_LIMITS_BYTES}")
    return KeyRecord(**fields_)


def _check_strings(data: dict[str, Any]) -> None:
    for name in ("key_id", "salt", "digest", "team", "project", "user", "created_at", "revoked_at"):
        if not isinstance(data.get(name, ""), str):
            raise KeyRecordError(f"{name} is not a string")
    checks = (("key_id", _KEY_ID), ("salt", _HEX32), ("digest", _HEX64))
    for name, pattern in checks:
        if not pattern.fullmatch(data.get(name, "")):
            raise KeyRecordError(f"{name} {data.get(name, '')[:80]!r} is malformed")
    for name in ("team", "project", "user", "created_at", "revoked_at"):
        if len(data.get(name, "")) > MAX_LABEL:
            raise KeyRecordError(f"{name} is longer than {MAX_LABEL} characters")
    if not data.get("team"):
        raise KeyRecordError("team is empty")


class KeyStore(Protocol):
    """What the gateway reads: ``records`` by key id (a plain dict read on the hot path) and ``refresh()``,
    called once a second (a file store re-reads; the Kafka store's thread keeps ``records`` current)."""

    records: dict[str, KeyRecord]

    def refresh(self) -> bool: ...


class KeyAdmin(Protocol):
    """What ``aimeter keys`` and the demo write through: the topic, or the file store."""

    def load(self) -> dict[str, KeyRecord]: ...

    def put(self, records: Iterable[KeyRecord]) -> None: ...

    def where(self) -> str: ...


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def new_key(team: str, project: str, user: str, created_at: datetime) -> tuple[str, KeyRecord]:
    """A fresh key (returned once, to show the user) and the record that is stored instead of it."""
    key_id = "".join(secrets.choice(_ID_CHARS) for _ in range(10))
    secret = "".join(secrets.choice(_SECRET_CHARS) for _ in range(32))
    salt = secrets.token_hex(16)
    record = KeyRecord(key_id, salt, _digest(salt, secret), team, project, user, created_at.isoformat())
    return f"{PREFIX}_{key_id}_{secret}", record


def split_key(presented: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None (no lookup is done for junk)."""
    parts = presented.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def verify(records: dict[str, KeyRecord], presented: str) -> KeyRecord | None:
    """The active record matching ``presented``; hashes are compared in constant time."""
    parts = split_key(presented)
    if parts is None:
        return None
    record = records.get(parts[0])
    if record is None or not record.active:
        return None
    return record if hmac.compare_digest(record.digest, _digest(record.salt, parts[1])) else None


class KeyFile:
    """The JSON store. Writes go to a temp file renamed into place, so readers never see half a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime_ns = -1
        self.records: dict[str, KeyRecord] = {}

    def load(self) -> dict[str, KeyRecord]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return {r["key_id"]: KeyRecord(**r) for r in data.get("keys", [])}

    def put(self, records: Iterable[KeyRecord]) -> None:
        """Add or replace these records (``aimeter keys`` with AIMETER_KEYS_STORE=file)."""
        current = self.load()
        current.update((r.key_id, r) for r in records)
        self.save(current)

    def where(self) -> str:
        return str(self.path)

    def refresh(self) -> bool:
        """Reload when the file changed; returns whether it did. Cheap: one stat when unchanged."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        if mtime == self._mtime_ns:
            return False
        self.records = self.load()
        self._mtime_ns = mtime
        return True

    def save(self, records: dict[str, KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"keys": [asdict(r) for r in sorted(records.values(), key=lambda r: (r.created_at, r.key_id))]}
        # mkstemp: created 0600 (private before any byte is written) under a unique name, so gateways sharing
        # a data dir may each write their snapshot at once; the rename makes the whole file appear at once.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(payload, indent=2) + "\n")
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
