"""Pieces every fake API shares: token counts, answer text, wire frames and synthetic GPU timings.

Pure: no I/O, no clock. Every provider module turns the same ``Usage`` (normalized semantics, see
``aimeter.fake_upstream.plan``) into its own wire fields.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import orjson

JsonDict = dict[str, Any]

# Synthetic speeds for self-hosted timings (llama.cpp ``timings``, Ollama durations): fixed so tests
# can compute the expected GPU seconds. Prompt tokens evaluate at 4000/s, generation runs at 50/s.
PROMPT_MS_PER_TOKEN = 0.25
GENERATION_MS_PER_TOKEN = 20.0
LOAD_MS = 50.0


class Usage(NamedTuple):
    """Token counts of one answer in normalized semantics.

    ``prompt`` counts every input token; ``cached`` (cache reads) and the cache writes are subsets
    of it. ``completion`` counts every output token; ``reasoning`` is a subset of it.
    """

    prompt: int
    completion: int
    cached: int = 0
    reasoning: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def uncached(self) -> int:
        """Input tokens neither read from nor written to a cache (Anthropic's ``input_tokens``)."""
        return self.prompt - self.cached - self.cache_write

    @property
    def visible(self) -> int:
        """Output tokens that are not reasoning (Gemini's ``candidatesTokenCount``)."""
        return self.completion - self.reasoning


def partial(usage: Usage, done: int, total: int) -> Usage:
    """Usage after ``done`` of ``total`` content pieces: running counts as Gemini reports mid-stream."""
    visible = usage.visible * done // max(total, 1)
    return usage._replace(completion=usage.reasoning + visible)


class StreamParts(NamedTuple):
    """An encoded stream: head frames, one frame per content delta, tail frames, an in-stream error frame,
    and (``only_error``, when it differs from ``error``) the whole stream of an API failing before it started."""

    head: bytes
    content: list[bytes]
    tail: bytes
    error: bytes
    only_error: bytes = b""


def sse(obj: JsonDict) -> bytes:
    """One server-sent event with only a ``data:`` line (OpenAI Chat, Gemini)."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(name: str, obj: JsonDict) -> bytes:
    """One named server-sent event (Anthropic, OpenAI Responses): ``event:`` then ``data:``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def ndjson(obj: JsonDict) -> bytes:
    """One newline-delimited JSON line (Ollama)."""
    return orjson.dumps(obj) + b"\n"


@lru_cache(maxsize=64)
def _words(count: int) -> tuple[str, ...]:
    """Deterministic filler words `tok0 tok1 …`; cached because benchmarks repeat counts."""
    return tuple(f"tok{i}" for i in range(count))


@lru_cache(maxsize=64)
def content_text(words: int) -> str:
    """The full assistant text of `words` words; equals the concatenated stream deltas."""
    return " ".join(_words(words))


@lru_cache(maxsize=64)
def text_pieces(words: int, chunks: int) -> tuple[str, ...]:
    """`content_text(words)` split into `chunks` deltas of near-equal word counts."""
    all_words = _words(words)
    pieces = []
    for i in range(chunks):
        part = " ".join(all_words[i * words // chunks : (i + 1) * words // chunks])
        pieces.append(part if i == 0 else " " + part)
    return tuple(pieces)


@lru_cache(maxsize=64)
def content_pieces(words: int, chunks: int) -> tuple[bytes, ...]:
    """`text_pieces` JSON-encoded, for splicing into a pre-serialized chunk template."""
    return tuple(orjson.dumps(piece) for piece in text_pieces(words, chunks))


def prompt_ms(usage: Usage) -> float:
    """Synthetic prompt-evaluation time: only tokens not read from a cache are evaluated."""
    return (usage.prompt - usage.cached) * PROMPT_MS_PER_TOKEN


def generation_ms(usage: Usage) -> float:
    """Synthetic generation time of every output token."""
    return usage.completion * GENERATION_MS_PER_TOKEN
