"""A minimal encoder for ClickHouse's Native format (one block), for the column kinds the pricer writes. Pure.

Why: clickhouse-connect's generic Native writer works per value in Python (docs/decisions.md); ClickHouse parses
Native (columnar, length-prefixed) cheaper than any text format. Each column here is built with
C-level operations over the whole batch (``array``, ``str.join``, ``map``), not per value in Python.

A block may declare a column with a *wire* type other than the table's: ClickHouse converts on insert
(``input_format_native_allow_types_conversion``, on by default and set by the writer). We use that for
exact, cheap conversions only: canonical UUID and UTC ISO texts to UUID and DateTime64 (the text is what
the event carried, parsed by ClickHouse; DateTime64(3) keeps milliseconds, the rest is truncated, as
clickhouse-connect did), String to LowCardinality(String), UInt8 to Bool, and Decimal(18, 12) to
Decimal(38, 12) when every value of a column fits.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from itertools import accumulate, chain
from typing import Any

DECIMAL_SCALE = 12
_DECIMAL64_LIMIT = 10**18  # Decimal(18, 12) holds |units| < 10**18
_INT64 = 2**63


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _name(text: str) -> bytes:
    raw = text.encode()
    return leb128(len(raw)) + raw


def _prefixed(text: str) -> bytes:
    raw = text.encode()
    return leb128(len(raw)) + raw


def strings(values: Sequence[str]) -> bytes:
    """A String column: each value's UTF-8 length (LEB128) then its bytes."""
    if not values:
        return b""
    lengths = set(map(len, values))
    if len(lengths) == 1 and (size := lengths.pop()) < 0x80 and "".join(values).isascii():
        # One short ASCII length (ids, times): the length byte is the same before every value, one join.
        return (chr(size) + chr(size).join(values)).encode("ascii")
    return b"".join(map(_prefixed, values))


def repeated_strings(values: Sequence[str]) -> bytes:
    """:func:`strings` for a column with few distinct values (users, key ids): each is encoded once."""
    encoded = {v: _prefixed(v) for v in set(values)}
    return b"".join(map(encoded.__getitem__, values))


def _index_code(size: int) -> tuple[str, int]:
    """The narrowest index width for a dictionary of ``size`` keys: array code and LowCardinality type id."""
    for code, kind, limit in (("B", 0, 1 << 8), ("H", 1, 1 << 16), ("I", 2, 1 << 32)):
        if size <= limit:
            return code, kind
    return "Q", 3


def low_cardinality(keys: Sequence[str], indexes: bytes | None = None, values: Sequence[str] = ()) -> bytes:
    """A LowCardinality(String) column: its dictionary (``keys``, no duplicates) and one index per row.

    Give ``values`` (the rows' strings), or ``indexes`` already encoded at the width :func:`_index_code`
    chooses. Layout as ClickHouse's native serialization: the state prefix (version 1), then flags (index
    width, "has additional keys", "needs a dictionary update"), the keys, the row count and the indexes.
    """
    code, kind = _index_code(len(keys))
    if indexes is None:
        position = {key: i for i, key in enumerate(keys)}
        found = map(position.__getitem__, values)
        indexes = bytes(found) if code == "B" else array(code, found).tobytes()
    rows = len(indexes) // array(code).itemsize
    header = array("Q", [1, (1 << 9) | (1 << 10) | kind, len(keys)]).tobytes()
    return header + strings(keys) + array("Q", [rows]).tobytes() + indexes


def labels(values: Sequence[str]) -> bytes:
    """LowCardinality(String) from the rows' strings: the dictionary is their distinct values."""
    return low_cardinality(list(set(values)), values=values)


def utc_texts(values: Sequence[str]) -> bytes:
    """``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` texts as a String column without the ``Z`` ClickHouse's cast refuses.

    Each value is written with its length less one, then every ``Z`` goes: each text has exactly one, at
    its end, and a length byte (below 0x20) is never a ``Z``.
    """
    if not values:
        return b""
    lengths = set(map(len, values))
    if len(lengths) == 1:  # the gateway writes microseconds always (unless they are 0): one join
        size = chr(lengths.pop() - 1)
        return (size + size.join(values)).replace("Z", "").encode("ascii")
    sizes = map(chr, map((-1).__add__, map(len, values)))
    return "".join(map(str.__add__, sizes, values)).replace("Z", "").encode("ascii")


def uint(values: Sequence[int], code: str) -> bytes:
    """``code``: the ``array`` type code of the column's width (``B`` UInt8, ``H`` UInt16, ``Q`` UInt64)."""
    return array(code, values).tobytes()


def nullable(values: Sequence[Any], encode: Callable[[Sequence[Any]], bytes], fill: Any) -> bytes:
    """Null map (1 = NULL), then the values with ``fill`` in the NULL places."""
    nulls = values.count(None)
    if nulls == 0:
        return bytes(len(values)) + encode(values)
    if nulls == len(values):
        return b"\x01" * len(values) + encode([fill] * len(values))
    flags = bytes([v is None for v in values])
    return flags + encode([fill if v is None else v for v in values])


def float64(values: Sequence[float]) -> bytes:
    return array("d", values).tobytes()


def decimal_type(values: Sequence[int | None]) -> str:
    """The narrowest wire type that holds every value: Decimal(18, 12) (Int64) when it can."""
    present = [v for v in values if v is not None]
    if not present or (max(present) < _DECIMAL64_LIMIT and min(present) > -_DECIMAL64_LIMIT):
        return f"Decimal(18, {DECIMAL_SCALE})"
    return f"Decimal(38, {DECIMAL_SCALE})"


def decimals(values: Sequence[int], wire: str) -> bytes:
    """Integer units (value x 10**12) as Decimal64 (Int64) or Decimal128 (Int128) little-endian."""
    if not any(values):  # a class no event of the batch used: zeros, whatever the width
        return bytes((8 if wire.startswith("Decimal(18") else 16) * len(values))
    if wire.startswith("Decimal(18"):
        return array("q", values).tobytes()
    return b"".join(v.to_bytes(16, "little", signed=True) for v in values)


def string_map(values: Sequence[dict[str, str]]) -> bytes:
    """Map(String, String): cumulative entry counts (UInt64), then all keys, then all values."""
    offsets = array("Q", list(accumulate(map(len, values)))).tobytes()
    keys = list(chain.from_iterable(values))
    items = list(chain.from_iterable(map(dict.values, values)))
    return offsets + repeated_strings(keys) + repeated_strings(items)


class Block:
    """One Native block: columns are added in order with their wire type and encoded data."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.names: list[str] = []
        self.parts: list[bytes] = []

    def add(self, name: str, wire_type: str, data: bytes) -> None:
        self.names.append(name)
        self.parts += (_name(name), _name(wire_type), data)

    def to_bytes(self) -> bytes:
        return b"".join((leb128(len(self.names)), leb128(self.rows), *self.parts))
