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

from aimeter.events import TokenUsage, UsageSource
from aimeter.gateway.streams import StreamUsage, estimate_tokens
from aimeter.gateway.usage import Extracted

_SSE_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_NDJSON_END = re.compile(rb"\n")
# An unescaped quote can only delimit a JSON string, so these bytes can only be the key itself.
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
MAX_KEPT_BYTES = 8 * 1024 * 1024  # content kept for estimating a cancelled stream, per request


def _sse_fields(event: bytes) -> tuple[str, bytes | None]:
    """The ``event:`` name and the joined ``data:`` lines of one SSE event."""
    name, data = "", []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, (b"\n".join(data) if data else None)


class StreamScanner:
    """Feed raw upstream bytes; get back the bytes to forward. ``ndjson=True`` for Ollama's line stream."""

    def __init__(self, reader: StreamUsage, *, ndjson: bool = False, strip_injected_usage: bool = False) -> None:
        self.reader = reader
        self.ndjson = ndjson
        self.strip = strip_injected_usage
        self._end = _NDJSON_END if ndjson else _SSE_END
        self._buffer = b""
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
        self._buffer += chunk
        out: list[bytes] = []
        while (match := self._end.search(self._buffer)) is not None:
            event, self._buffer = self._buffer[: match.end()], self._buffer[match.end():]
            out.append(self._on_event(event))
        return b"".join(out) if self.strip else chunk

    def finish(self) -> bytes:
        """End of stream: a trailing event without its terminator is still scanned (and forwarded if held)."""
        rest, self._buffer = self._buffer, b""
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
            return _NULL_USAGE.sub(b"", event) if self.strip else event
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
        return _NULL_USAGE.sub(b"", event)

    def _keep(self, payload: bytes) -> None:
        if self._kept_bytes < MAX_KEPT_BYTES:
            self._kept.append(payload)
            self._kept_bytes += len(payload)

    def usage(self) -> Extracted:
        """Reported usage if the stream carried it, else an estimate from the text streamed so far."""
        reported = self.reader.result()
        if reported.source is not UsageSource.NONE:
            return reported
        text = "".join(self._text(p) for p in self._kept)
        if not text:
            return reported
        estimate = TokenUsage(output_tokens=estimate_tokens(text))
        return Extracted(estimate, UsageSource.ESTIMATED, reported.model_served,
                         problem="stream carried no usage; output tokens estimated from the streamed text")

    def _text(self, payload: bytes) -> str:
        try:
            return self.reader.text_of(orjson.loads(payload))
        except orjson.JSONDecodeError:
            return ""
