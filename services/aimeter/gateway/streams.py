"""What every API's stream-usage reader implements, and the shared estimate for cancelled streams.

The gateway's stream framing (SSE or NDJSON) hands each *decoded* event to a ``StreamUsage``
only when its cheap byte test says the event may matter, so the common content chunk costs
no JSON parse on the hot path. Raw content events are kept (bounded by the response size) and
decoded only if the stream ends without usage, to estimate the tokens already generated.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from aimeter.gateway.usage import Extracted


class StreamUsage(Protocol):
    """Reads one API's stream events in order and reports the usage they carried."""

    def interesting(self, payload: bytes) -> bool:
        """Cheap byte test: may this event carry usage or the served model? False skips the decode."""
        ...

    def on_event(self, event: Any, event_type: str) -> None:
        """A decoded JSON event (SSE ``data`` or one NDJSON line); ``event_type`` is the SSE ``event:`` name or ''."""
        ...

    def text_of(self, event: Any) -> str:
        """Generated text in one decoded event (for estimating a stream that carried no usage)."""
        ...

    def result(self) -> Extracted:
        """Usage seen so far; ``UsageSource.NONE`` when the stream carried none."""
        ...


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` when no offline tokenizer exists for the model.

    BPE tokenizers of current models average ~4 bytes of English per token; we round up so an
    estimate errs towards what the provider bills. Rows using it say ``usage_source=estimated``.
    """
    return math.ceil(len(text.encode("utf-8")) / 4) if text else 0
