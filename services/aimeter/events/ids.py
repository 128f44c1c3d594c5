"""Event ids: UUIDv7 (RFC 9562), 48-bit Unix milliseconds then 74 random bits.

Written here rather than taken from ``uuid6``: that package draws from ``secrets`` (slow on the
gateway's hot path) and, to stay monotonic, pushes the timestamp one millisecond ahead for every id
made within the same millisecond, so under load its ids drift into the future. Uniqueness is all
the pipeline needs (the id is the dedup key), and 74 random bits per millisecond give it.
"""

from __future__ import annotations

import os
import time
from uuid import UUID

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62


def new_event_id() -> UUID:
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 are used
    value = ((time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF) << 80
    value |= _VERSION | ((rand >> 62) & 0xFFF) << 64 | _VARIANT | (rand & ((1 << 62) - 1))
    return UUID(int=value)
