"""Broken answers on purpose (``malformed=N`` directive), so tests can prove the gateway survives them.

1: JSON cut short; 2: invalid UTF-8 bytes inside the body; 3: negative token counts; 4: no usage at
all; 5: absurd token counts (2**50). Counts are found by key name, so one rule covers every API.
"""

from __future__ import annotations

from typing import Any

import orjson

BROKEN_JSON, BAD_UTF8, NEGATIVE, NO_USAGE, ABSURD = 1, 2, 3, 4, 5
_USAGE_BLOCKS = {"usage", "usageMetadata"}
_OLLAMA_COUNTS = {"prompt_eval_count", "eval_count", "prompt_eval_cached_count"}


def _is_count(key: str, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and (
        key.endswith(("tokens", "TokenCount")) or key in _OLLAMA_COUNTS)


def _rewrite(obj: Any, mode: int) -> Any:
    if isinstance(obj, list):
        return [_rewrite(item, mode) for item in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if mode == NO_USAGE and (key in _USAGE_BLOCKS or key in _OLLAMA_COUNTS):
            continue
        if mode in {NEGATIVE, ABSURD} and _is_count(key, value):
            out[key] = -value - 1 if mode == NEGATIVE else 2**50
        else:
            out[key] = _rewrite(value, mode)
    return out


def malformed_body(obj: Any, mode: int) -> bytes:
    """The bytes of a whole answer, broken the way ``mode`` says."""
    if mode == BROKEN_JSON:
        return orjson.dumps(obj)[:-7]
    if mode == BAD_UTF8:
        return orjson.dumps(obj).replace(b'"', b'"\xff\xfe', 1)
    return orjson.dumps(_rewrite(obj, mode))
