"""Stream framing, scanned as bytes pass: SSE (OpenAI, Anthropic, Gemini) and NDJSON (Ollama).

The gateway forwards bytes, it does not re-encode them. Each complete event goes to the API's
``StreamUsage`` reader, decoded only when the reader's byte test asks for it. Only when the
gateway itself asked an OpenAI-compatible upstream for ``stream_options.include_usage`` does it
edit the stream, and then only to remove exactly what that option added (the usage-only chunk
and the ``"usage":null`` fields), so the client sees what it would have seen without us.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from aimeter.events import UsageSource
from aimeter.gateway.streams import StreamUsage, estimate_output
from aimeter.gateway.usage import Extracted

_SSE_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# An unescaped quote can only delimit a JSON string, so these bytes can only be the key itself.
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
_USAGE_KEY, _COMPACT_NULL_USAGE = b'"usage"', b',"usage":null'
MAX_KEPT_BYTES = 8 * 1024 * 1024  # content kept for estimating a cancelled stream, per request
# A partial event up to this size is re-joined with each new read, as before (one small copy per read);
# a longer one is collected in a list until its end arrives, so an event of n bytes costs O(n), not O(n^2).
SHORT_EVENT_BYTES = 64 * 1024
MAX_EVENT_BYTES = 64 * 1024 * 1024  # default cap on one event; past it the event is passed on unscanned


def _sse_fields(event: bytes) -> tuple[str, bytes | None]:
    """The ``event:`` name and the joined ``data:`` lines of one SSE event."""
    if event.startswith(b"data:"):  # the common event, one data line: no line loop
        line = event.rstrip(b"\r\n")
        if b"\n" not in line and b"\r" not in line:
            return "", line[5:].removeprefix(b" ")
    name, data = "", []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, (b"\n".join(data) if data else None)


def _strip_null_usage(event: bytes) -> bytes:
    """Remove the ``"usage":null`` fields that include_usage added; the compact form without the regex."""
    if _USAGE_KEY not in event:
        return event
    if event.count(_USAGE_KEY) == 1 and _COMPACT_NULL_USAGE in event:  # what the regex would remove, exactly
        return event.replace(_COMPACT_NULL_USAGE, b"", 1)
    return _NULL_USAGE.sub(b"", event)


class StreamScanner:
    """Feed raw upstream bytes; get back the bytes to forward. ``ndjson=True`` for Ollama's line stream."""

    def __init__(self, reader: StreamUsage, *, ndjson: bool = False, strip_injected_usage: bool = False,
                 max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.reader = reader
        self.ndjson = ndjson
        self.strip = strip_injected_usage
        self.max_event = max_event_bytes
        self._buffer = b""
        self._long: list[bytes] = []  # a pending event longer than SHORT_EVENT_BYTES, in pieces
        self._long_bytes = 0
        self._skip_tail: bytes | None = None  # passing an over-long event through: the last bytes seen of it
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self.saw_done = False
        self.problem = ""

    @property
    def complete(self) -> bool:
        """The stream reached its documented end: ``[DONE]`` (OpenAI) or the reader's own end event."""
        return self.saw_done or bool(getattr(self.reader, "complete", False))

    def feed(self, chunk: bytes) -> bytes:
        """Consume a chunk; return what to forward now (everything, unless stripping holds a partial event)."""
        if self._long or self._skip_tail is not None:  # rare: an event longer than SHORT_EVENT_BYTES is under way
            return self._feed_long(chunk)
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[bytes] = []
        start = 0
        # Terminators are found with bytes.find (the regex alternation cost more than the rest of the scan);
        # the regex is kept for streams that use CR line ends, which are rare.
        crlf = not self.ndjson and b"\r" in buffer
        while True:
            if crlf:
                match = _SSE_END.search(buffer, start)
                end = match.end() if match else -1
            else:
                term = b"\n" if self.ndjson else b"\n\n"
                end = buffer.find(term, start)
                end = end + len(term) if end >= 0 else -1
            if end < 0:
                break
            out.append(self._on_event(buffer[start:end]))
            start = end
        self._buffer = rest = buffer[start:] if start else buffer
        if len(rest) > SHORT_EVENT_BYTES:
            self._buffer, self._long, self._long_bytes = b"", [rest], len(rest)
        return b"".join(out) if self.strip else chunk

    def _ends_event(self, tail: bytes, chunk: bytes) -> int:
        """Where in ``chunk`` the first event terminator ends, counting one that starts in ``tail``; -1: none."""
        probe = tail + chunk[:3]  # a terminator split across two reads
        if b"\n" not in chunk and b"\r" not in chunk and b"\n" not in probe and b"\r" not in probe:
            return -1  # the usual case inside a long event: memchr only, no regex
        for text in (probe, chunk):
            if self.ndjson:
                end = text.find(b"\n")
                end = end + 1 if end >= 0 else -1
            else:
                match = _SSE_END.search(text)
                end = match.end() if match else -1
            if end > 0 and (text is chunk or end > len(tail)):
                return end - len(tail) if text is probe else end
        return -1

    def _feed_long(self, chunk: bytes) -> bytes:
        """Collect a long event without re-copying it, or pass an over-long one through, until its end."""
        if self._skip_tail is not None:
            end = self._ends_event(self._skip_tail, chunk)
            if end < 0:
                self._skip_tail = (self._skip_tail + chunk)[-3:]
                return chunk
            self._skip_tail = None
            rest = self.feed(chunk[end:])
            return chunk[:end] + rest if self.strip else chunk
        if self._ends_event(self._long[-1][-3:], chunk) >= 0:  # its end is here: join once, scan as usual
            self._buffer = b"".join(self._long)
            self._long, self._long_bytes = [], 0
            return self.feed(chunk)
        self._long.append(chunk)
        self._long_bytes += len(chunk)
        if self._long_bytes <= self.max_event:
            return b"" if self.strip else chunk
        # Too long to hold: pass it on unscanned (held bytes too) and pick up again after its end.
        held, self._long, self._long_bytes = self._long, [], 0
        self._skip_tail = held[-1][-3:]
        self.problem = self.problem or f"a stream event longer than {self.max_event} bytes was passed on unscanned"
        return b"".join(held) if self.strip else chunk

    def finish(self) -> bytes:
        """End of stream: a trailing event without its terminator is still scanned (and forwarded if held)."""
        if self._long:
            self._buffer, self._long, self._long_bytes = b"".join(self._long), [], 0
        rest, self._buffer = self._buffer, b""
        if self._skip_tail is not None:
            self._skip_tail = None
            return b""  # the unfinished over-long event was forwarded as it came
        if not rest.strip():
            return rest if self.strip else b""
        self.problem = self.problem or "stream ended inside an event"
        forwarded = self._on_event(rest)
        return forwarded if self.strip else b""

    def _on_event(self, event: bytes) -> bytes:
        name, payload = ("", event.strip()) if self.ndjson else _sse_fields(event)
        if not payload:
            return event
        if payload == b"[DONE]":
            self.saw_done = True
            return event
        if not self.reader.interesting(payload):
            self._keep(payload)
            return _strip_null_usage(event) if self.strip else event
        try:
            decoded = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.problem = "stream carried an event that is not JSON"
            return event
        self.reader.on_event(decoded, name)
        self._keep(payload)
        if self.strip:
            return self._strip(event, decoded)
        return event

    def _strip(self, event: bytes, decoded: Any) -> bytes:
        if isinstance(decoded, dict) and isinstance(decoded.get("usage"), dict) and decoded.get("choices") == []:
            return b""  # the usage-only chunk that include_usage added
        return _strip_null_usage(event)

    def _keep(self, payload: bytes) -> None:
        if self._kept_bytes < MAX_KEPT_BYTES:
            self._kept.append(payload)
            self._kept_bytes += len(payload)

    def usage(self) -> Extracted:
        """Reported usage if the stream carried it, else an estimate from the text streamed so far."""
        reported = self.reader.result()
        if reported.source is not UsageSource.NONE:
            return reported
        return estimate_output(reported, "".join(self._text(p) for p in self._kept))

    def _text(self, payload: bytes) -> str:
        try:
            return self.reader.text_of(orjson.loads(payload))
        except orjson.JSONDecodeError:
            return ""
