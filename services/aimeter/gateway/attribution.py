"""Attribution from request headers: validated, bounded, and named in every error.

Our own ``X-Aimeter-*`` headers are strict: a bad value, or one that contradicts what the gateway key pins,
is refused with a 400 that names the header. The body's user (OpenAI's ``user``, Anthropic's
``metadata.user_id``) is the app's free text, which the provider accepts: it never fails a request and is
kept as sent, escaped only where it could not be stored as is (see :func:`body_user_label`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from aimeter.events import Attribution
from aimeter.events.usage import MAX_LABEL_LEN, MAX_TAG_LEN, MAX_TAGS
from aimeter.gateway.keys import KeyRecord

# Printable ASCII minus separators that would corrupt CSV/log lines; no control characters.
_LABEL = re.compile(r"[A-Za-z0-9 ._:@/+-]*")
HEADER_FIELDS = {"x-aimeter-team": "team", "x-aimeter-project": "project", "x-aimeter-user": "user"}


class AttributionError(ValueError):
    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"invalid header {header}: {problem}")
        self.header = header


def _label(header: str, raw: str, limit: int = MAX_LABEL_LEN) -> str:
    if len(raw) > limit:
        raise AttributionError(header, f"longer than {limit} characters")
    if not _LABEL.fullmatch(raw):
        raise AttributionError(header, "only letters, digits, space and . _ : @ / + - are allowed")
    return raw.strip()


def parse_tags(raw: str) -> dict[str, str]:
    """``k=v,k2=v2``, at most MAX_TAGS pairs, each key and value bounded."""
    tags: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise AttributionError("X-Aimeter-Tags", f"expected k=v, got {part[:40]!r}")
        tags[_label("X-Aimeter-Tags", key.strip(), MAX_TAG_LEN)] = _label("X-Aimeter-Tags", value.strip(), MAX_TAG_LEN)
        if len(tags) > MAX_TAGS:
            raise AttributionError("X-Aimeter-Tags", f"more than {MAX_TAGS} tags")
    return tags


_DIGEST_CHARS = 16  # hex digits of sha256 that keep two long users apart after clipping


def _escaped(char: str) -> str:
    """A character that cannot be stored as is (control, separator, surrogate) and the backslash itself, as a
    Python escape (``\\n``, ``\\x00``, ``\\u2028``, ``\\\\``): printable text is kept as sent."""
    if char.isprintable() and char != "\\":
        return char
    return char.encode("unicode_escape").decode("ascii")


def body_user_label(raw: str) -> str:
    """The body's user as an attribution label, faithfully: printable text (``Doe, Jane``, ``josé@x``) as sent;
    control characters and the backslash escaped (``\\n``, ``\\\\``) so one text never stands for two users.
    Past MAX_LABEL_LEN it is clipped and ends in ``~`` + a digest of the whole value, so distinct users stay
    distinct."""
    text = "".join(map(_escaped, raw)).strip()
    if len(text) <= MAX_LABEL_LEN:
        return text
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    return f"{text[:MAX_LABEL_LEN - _DIGEST_CHARS - 1]}~{digest}"


def _header_values(headers: Mapping[str, str], body_user: str) -> tuple[dict[str, str], dict[str, str]]:
    """Validated team/project/user and tags from ``X-Aimeter-*`` headers; the body's ``user`` fills a missing user."""
    values = {field: _label(name.title(), headers[name]) for name, field in HEADER_FIELDS.items() if name in headers}
    if not values.get("user") and body_user:
        values["user"] = body_user_label(body_user)
    if not values.get("team"):
        values.pop("team", None)
    tags = parse_tags(headers["x-aimeter-tags"]) if "x-aimeter-tags" in headers else {}
    return values, tags


def attribution_from_headers(headers: Mapping[str, str], body_user: str = "") -> Attribution:
    """Attribution from headers alone (auth=none): the headers say everything."""
    values, tags = _header_values(headers, body_user)
    return Attribution(**values, tags=tags)


_CACHE_MAX = 4096
_cache: dict[tuple[object, ...], Attribution] = {}


def attribution_for(key: KeyRecord | None, headers: Mapping[str, str], user_from_body: str = "") -> Attribution:
    """Who pays. With a gateway key the team is the key's and cannot be overridden by a header;
    project and user come from the key, else from the headers/body. Without keys (auth=none) the
    headers say everything.

    This is the hot path, and most requests repeat the attribution of an earlier one (same key, same
    or no ``X-Aimeter-*`` headers): the result, a frozen model, is shared from a bounded cache keyed by
    every input, so validation runs once per distinct input. Invalid inputs raise and are not cached.
    """
    inputs = (key, headers.get("x-aimeter-team"), headers.get("x-aimeter-project"), headers.get("x-aimeter-user"),
              headers.get("x-aimeter-tags"), user_from_body)
    cached = _cache.get(inputs)
    if cached is None:
        if len(_cache) >= _CACHE_MAX:  # many distinct users or tags: start over rather than grow
            _cache.clear()
        cached = _cache[inputs] = _attribution_for(key, headers, user_from_body)
    return cached


def _attribution_for(key: KeyRecord | None, headers: Mapping[str, str], user_from_body: str) -> Attribution:
    if key is None:
        return attribution_from_headers(headers, user_from_body)
    values, tags = _header_values(headers, user_from_body)
    if "x-aimeter-team" in headers and headers["x-aimeter-team"].strip() != key.team:
        raise AttributionError("X-Aimeter-Team", f"the key belongs to team {key.team!r}; a header cannot change it")
    for field, pinned in (("project", key.project), ("user", key.user)):
        header = f"X-Aimeter-{field.title()}"
        sent = headers.get(header.lower(), "").strip()
        if pinned and sent and sent != pinned:
            raise AttributionError(header, f"the key {key.key_id} is pinned to {field} {pinned!r}, which a header "
                                           f"cannot change to {sent!r}; drop the header or use a key for that {field}")
    # A pinned user wins over the body's user, which never fails a request (it is the app's free text).
    return Attribution(team=key.team, project=key.project or values.get("project", ""),
                       user=key.user or values.get("user", ""), api_key_id=key.key_id, tags=tags)
