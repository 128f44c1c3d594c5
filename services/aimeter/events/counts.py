"""The reconciliation count record on ``ai.counts.v1``: one gateway's emitted events in one UTC hour.

Key ``<gateway id>|<hour>`` (hour as ``2026-12-06T19:00Z``), value JSON
``{"gateway_id": ..., "hour": ..., "emitted": N, "produced_at": ISO-8601}``. ``emitted`` is cumulative: every
event that gateway journaled (or, disk full, could not journal) for that hour so far. The topic is compacted
and the table keeps the highest count per key, so a re-sent or replayed record never adds anything: it
states the same total again. A count never goes down while the gateway's journal and counts file survive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

HOUR_FORMAT = "%Y-%m-%dT%H:00Z"


class CountRecordError(ValueError):
    """A record on the counts topic that is not a count; the consumer logs it and skips it."""


@dataclass(frozen=True)
class GatewayCount:
    gateway_id: str
    hour: datetime  # UTC, whole hour
    emitted: int
    produced_at: datetime


def count_key(gateway_id: str, hour: str) -> bytes:
    return f"{gateway_id}|{hour}".encode()


def encode_count(gateway_id: str, hour: str, emitted: int, produced_at: datetime) -> tuple[bytes, bytes]:
    """(key, value) of one count record; ``hour`` as the journal labels it (``HOUR_FORMAT``)."""
    value = orjson.dumps({"gateway_id": gateway_id, "hour": hour, "emitted": emitted,
                          "produced_at": produced_at.isoformat()})
    return count_key(gateway_id, hour), value


def decode_count(value: bytes) -> GatewayCount:
    """Parse one record's value; raises ``CountRecordError`` naming what is wrong."""
    try:
        raw = orjson.loads(value)
        gateway_id, hour, emitted = str(raw["gateway_id"]), str(raw["hour"]), raw["emitted"]
        produced_at = datetime.fromisoformat(str(raw["produced_at"]))
        at = datetime.fromisoformat(hour.replace("Z", "+00:00"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CountRecordError(f"not a count record ({exc}): {value[:200]!r}") from None
    if not isinstance(emitted, int) or isinstance(emitted, bool) or emitted < 0 or not gateway_id \
            or at.minute or at.second or at.utcoffset() is None or produced_at.utcoffset() is None:
        raise CountRecordError(f"count record with a bad field (gateway id, whole UTC hour, count >= 0, "
                             f"zoned produced_at): {value[:200]!r}")
    return GatewayCount(gateway_id, at, emitted, produced_at)
