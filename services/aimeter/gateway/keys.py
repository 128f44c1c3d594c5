"""Gateway-issued virtual keys: shown once, stored only as salted hashes, compared in constant time.

A key looks like ``am_<key id>_<secret>``. The id is public (it names the key in events and
listings); only ``sha256(salt || secret)`` is stored. The store is one JSON file that every
gateway replica reads (a shared volume or config map) and reloads when it changes, so a
revocation takes effect within the reload interval without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

PREFIX = "am"
_ID_CHARS = string.ascii_lowercase + string.digits
_SECRET_CHARS = string.ascii_letters + string.digits


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

    @property
    def active(self) -> bool:
        return not self.revoked_at


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
        tmp = self.path.with_suffix(".tmp")
        payload = {"keys": [asdict(r) for r in sorted(records.values(), key=lambda r: r.created_at)]}
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600)  # private before any byte is written
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path)
