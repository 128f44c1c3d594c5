"""The pricer's fast decoder: msgspec structs generated from the pydantic contract at import time. Pure.

Why: msgspec decodes an event several times faster than pydantic's ``model_validate_json`` (figures in
docs/decisions.md). The pydantic model stays the one source of the contract: the structs below are built
by walking :class:`~aimeter.events.UsageEvent` (fields, defaults, constraints, ``extra="forbid"``,
``mode="after"`` model validators, which are called as they are written), and anything the generator
does not know how to mirror stops the import instead of being skipped.

The fast path is a *subset* of the contract, never a superset: it accepts only the canonical spelling
the gateway writes and defers everything else to pydantic, which then accepts or rejects with its own
message. So a decision can never differ, only the speed can:

* ``UUID`` must be the canonical lowercase hyphenated text; it is kept as text (ClickHouse parses it).
* aware datetimes must be UTC ISO text, ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, kept as text (calendar
  checked by the pattern); pydantic also takes offsets, numbers and other spellings.
* ints and bools must be JSON ints and booleans (pydantic's lax mode also takes ``"5"`` or ``5.0``).
Property tests in tests/unit/test_pricer_fastpath.py check this against pydantic on generated events.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from operator import attrgetter
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from uuid import UUID

import annotated_types
import msgspec
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from aimeter.events import UsageEvent

# [0-9], not \d: Python's \d also matches other scripts' digits, which pydantic rejects. The date is checked
# against the calendar by the pattern itself (leap years included; year 0 does not exist in Python), so one
# C-level match is the whole check.
UUID_TEXT = r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_DAY = (r"(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
        rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)")
UTC_TEXT = rf"\A{_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{{1,6}})?Z\Z"
_METAS: dict[type, Callable[[Any], dict[str, Any]]] = {
    annotated_types.Ge: lambda m: {"ge": m.ge},
    annotated_types.Gt: lambda m: {"gt": m.gt},
    annotated_types.Le: lambda m: {"le": m.le},
    annotated_types.Lt: lambda m: {"lt": m.lt},
    annotated_types.MaxLen: lambda m: {"max_length": m.max_length},
    annotated_types.MinLen: lambda m: {"min_length": m.min_length},
}
def _meta(field: FieldInfo) -> dict[str, Any]:
    constraints: dict[str, Any] = {}
    for item in field.metadata:
        convert = _METAS.get(type(item))
        if convert is None:
            raise TypeError(f"fast decoder: no msgspec mirror for constraint {item!r} on {field}")
        constraints |= convert(item)
    return constraints


def _mirror(annotation: Any, constraints: dict[str, Any], texts: list[str] | None = None) -> Any:
    """The msgspec type that accepts a subset of what pydantic accepts for ``annotation``, same values.

    UUIDs and datetimes are decoded as plain text and their pattern appended to ``texts``: they are
    checked per batch (:func:`bad_texts`), ~10x cheaper than a msgspec pattern per value.
    """
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"fast decoder: only `X | None` unions are mirrored, not {annotation}")
        return _mirror(options[0], constraints, texts) | None
    meta = msgspec.Meta(**constraints) if constraints else None
    if annotation in (UUID, AwareDatetime) and not constraints:
        if texts is None:
            raise TypeError("fast decoder: UUID and datetime fields are mirrored on the top-level model only")
        texts.append(UUID_TEXT if annotation is UUID else UTC_TEXT)
        return str
    if isinstance(annotation, type) and issubclass(annotation, StrEnum) and not constraints:
        return Literal[tuple(m.value for m in annotation)]
    if origin is Literal and all(isinstance(v, str) for v in get_args(annotation)) and not constraints:
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and not constraints:
        return struct_for(annotation)
    if annotation in (int, str, float, bool) or (origin is dict and get_args(annotation) == (str, str)):
        return Annotated[annotation, meta] if meta is not None else annotation
    raise TypeError(f"fast decoder: no msgspec mirror for {annotation!r}")


def _default(field: FieldInfo, kind: Any) -> Any:
    if field.default_factory is not None:
        factory = field.default_factory
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return msgspec.field(default_factory=struct_for(factory))
        if factory is dict:
            return msgspec.field(default_factory=dict)
        raise TypeError(f"fast decoder: no msgspec mirror for default_factory {factory!r}")
    if field.default is PydanticUndefined:
        return msgspec.NODEFAULT
    if isinstance(field.default, StrEnum):
        return field.default.value
    if field.default is None or isinstance(field.default, int | str | float | bool):
        return field.default
    raise TypeError(f"fast decoder: no msgspec mirror for default {field.default!r} of {kind}")


def _post_init(model: type[BaseModel]) -> Callable[[Any], None] | None:
    """The model's own ``mode="after"`` validators, run on the struct."""
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        raise TypeError(f"fast decoder: {model.__name__} has field validators, which are not mirrored")
    checks = []
    for validator in decorators.model_validators.values():
        if validator.info.mode != "after":
            raise TypeError(f"fast decoder: {model.__name__} has a mode={validator.info.mode!r} model validator")
        checks.append(validator.func)
    if not checks:
        return None

    def post_init(self: Any) -> None:
        for check in checks:
            check(self)  # written against the pydantic model's attributes, which the struct has too

    return post_init


_structs: dict[type[BaseModel], type[msgspec.Struct]] = {}


def struct_for(model: type[BaseModel], texts: dict[str, str] | None = None) -> type[msgspec.Struct]:
    """The msgspec struct mirroring ``model`` (same field names and order, so rows read the same).

    With ``texts`` (top level only), the names and patterns of its UUID and datetime fields are added to it.
    """
    if model in _structs and texts is None:
        return _structs[model]
    if model.model_config.get("extra") != "forbid":
        raise TypeError(f"fast decoder: {model.__name__} must forbid extra fields to be mirrored")
    fields = []
    for name, field in model.model_fields.items():
        if field.alias not in (None, name) or field.validation_alias is not None:
            raise TypeError(f"fast decoder: {model.__name__}.{name} has an alias, which is not mirrored")
        patterns: list[str] | None = [] if texts is not None else None
        kind = _mirror(field.annotation, _meta(field), patterns)
        if patterns and texts is not None:
            texts[name] = patterns[0]
        fields.append((name, kind, _default(field, kind)))
    namespace = {"__post_init__": hook} if (hook := _post_init(model)) else {}
    struct = msgspec.defstruct(f"Fast{model.__name__}", fields, kw_only=True, forbid_unknown_fields=True,
                               namespace=namespace, gc=False)
    _structs[model] = struct
    return struct


# The canonical spellings, as shapes: every ASCII digit (and, in a UUID, every a-f) read as "0".
_UTC_SHAPES = frozenset(f"0000-00-00T00:00:00{f}Z" for f in ("", *("." + "0" * k for k in range(1, 7))))
_UUID_SHAPE = "00000000-0000-0000-0000-000000000000"
_UTC_MICROS_SHAPE = "0000-00-00T00:00:00.000000Z"  # what the gateway writes (unless the microseconds are 0)
_DIGITS = str.maketrans(dict.fromkeys("0123456789", "0"))
_HEX = str.maketrans(dict.fromkeys("0123456789abcdef", "0"))
_utc_values = msgspec.json.Decoder(list[Annotated[datetime, msgspec.Meta(tz=True)]])


def _canonical(values: list[str], pattern: str) -> bool:  # values: texts (the structs' fields are str)
    """Are all these texts canonical? Checked for a whole batch in C: shapes by ``str.translate``, then
    (datetimes) the calendar by msgspec's datetime decoder, which takes exactly the real dates and times
    in these shapes, as pydantic does."""
    if not values:
        return True
    joined = "\n".join(values)
    translated = joined.translate(_HEX if pattern == UUID_TEXT else _DIGITS)
    usual = _UUID_SHAPE if pattern == UUID_TEXT else _UTC_MICROS_SHAPE
    # The usual case in one comparison, no split: translating keeps every length and never makes a newline,
    # so equal texts mean every value is one line of exactly this shape.
    if translated != "\n".join([usual] * len(values)):
        shapes = translated.split("\n")
        if len(shapes) != len(values):  # a value with a newline in it
            return False
        if pattern == UUID_TEXT:
            return set(shapes) == {_UUID_SHAPE}
        if not set(shapes) <= _UTC_SHAPES:
            return False
    elif pattern == UUID_TEXT:
        return True
    try:
        _utc_values.decode(('["' + '","'.join(values) + '"]').encode("ascii"))
    except msgspec.MsgspecError:
        return False
    return True


def bad_texts(events: list[Any]) -> set[int]:
    """Indices of the events whose UUID or datetime texts are not canonical (pydantic must decide those).

    One pass per field for the whole batch; only when a field fails is it looked at value by value."""
    bad: set[int] = set()
    for name, pattern in _texts.items():
        values = list(map(attrgetter(name), events))
        present = [v for v in values if v is not None] if None in values else values
        if not _canonical(present, pattern):
            check = re.compile(pattern)
            bad.update(i for i, v in enumerate(values) if v is not None and not check.match(v))
    return bad


_texts: dict[str, str] = {}
FastEvent = struct_for(UsageEvent, _texts)
_decoder = msgspec.json.Decoder(FastEvent)


def utc_text(moment: datetime) -> str:
    """The canonical UTC text of an aware datetime: ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` (pydantic's own JSON)."""
    t = moment.astimezone(UTC)
    fraction = f".{t.microsecond:06d}" if t.microsecond else ""
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}{fraction}Z"


def _mirrored(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return mirror_of(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, StrEnum):
        return value.value
    return dict(value) if isinstance(value, dict) else value


def mirror_of(model: BaseModel) -> Any:
    """A validated pydantic model as its struct twin, with the fast path's texts (the reference path's rows).

    Raises OverflowError for a time that has no UTC year (``0001-01-01T00:00:00+01:00``)."""
    struct = struct_for(type(model))
    return struct(**{name: _mirrored(getattr(model, name)) for name in struct.__struct_fields__})


def decode(raw: bytes) -> Any | None:
    """The event as a :data:`FastEvent`, or None: then pydantic must decide (it may still accept it).

    Its UUID and datetime fields are still unchecked texts: :func:`bad_texts` checks them per batch."""
    try:
        return _decoder.decode(raw)
    except (msgspec.MsgspecError, ValueError):  # ValueError: e.g. bytes that are not UTF-8
        return None


def decode_all(values: list[bytes]) -> list[Any | None]:
    """:func:`decode` for a batch: one C-level ``map`` over the decoder (cheaper than a call per message).

    If any message fails, the batch is decoded again message by message, so each failure is isolated
    exactly as :func:`decode` isolates it (its None sends it to pydantic, which decides and explains)."""
    try:
        return list(map(_decoder.decode, values))
    except (msgspec.MsgspecError, ValueError):
        return list(map(decode, values))
