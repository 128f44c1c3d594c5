"""Server-sent events, scanned as they pass: find the usage, optionally drop what we injected.

The gateway forwards bytes, it does not re-encode them. Only when it asked the upstream for
``stream_options.include_usage`` on the client's behalf does it edit the stream, and then only
to remove exactly what that option added (the usage-only chunk and ``"usage":null`` fields), so
the client sees what it would have seen without us.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# An unescaped quote can only delimit a JSON string, so these bytes can only be the key itself.
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def _data_payload(event: bytes) -> bytes | None:
    """The concatenated ``data:`` lines of one SSE event, or None if it has none."""
    parts = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


class SseScanner:
    """Feed raw upstream bytes; get back bytes to forward. Remembers the last usage and model seen."""

    def __init__(self, strip_injected_usage: bool = False) -> None:
        self.strip = strip_injected_usage
        self._buffer = b""
        self.usage_body: dict[str, Any] | None = None
        self.model: str = ""
        self.events = 0
        self.done = False
        self.problem = ""

    def feed(self, chunk: bytes) -> bytes:
        """Consume a chunk; return what to forward now (everything, unless stripping holds a partial event)."""
        self._buffer += chunk
        out: list[bytes] = []
        while True:
            match = _EVENT_END.search(self._buffer)
            if match is None:
                break
            event = self._buffer[: match.end()]
            self._buffer = self._buffer[match.end():]
            out.append(self._on_event(event))
        if not self.strip:
            return chunk
        return b"".join(out)

    def finish(self) -> bytes:
        """End of stream: a trailing event without its blank line is still forwarded (and scanned)."""
        rest, self._buffer = self._buffer, b""
        if not rest:
            return b""
        self.problem = self.problem or "stream ended inside an event"
        forwarded = self._on_event(rest)
        return forwarded if self.strip else b""

    def _on_event(self, event: bytes) -> bytes:
        self.events += 1
        payload = _data_payload(event)
        if payload is None:
            return event
        if payload == b"[DONE]":
            self.done = True
            return event
        if self.model and _USAGE_OBJECT.search(payload) is None:
            # The common chunk: nothing to learn, so skip the JSON parse on the hot path.
            return _NULL_USAGE.sub(b"", event) if self.strip else event
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.problem = "stream carried an event that is not JSON"
            return event
        return self._inspect(event, body)

    def _inspect(self, event: bytes, body: Any) -> bytes:
        if not isinstance(body, dict):
            return event
        if not self.model and isinstance(body.get("model"), str):
            self.model = body["model"]
        if isinstance(body.get("usage"), dict):
            self.usage_body = body
            if self.strip and body.get("choices") == []:
                return b""
        if self.strip:
            return _NULL_USAGE.sub(b"", event)
        return event
