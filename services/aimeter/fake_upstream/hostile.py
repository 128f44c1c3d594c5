"""Answers that attack the gateway, so tests can prove its limits hold.

Asked for like the ``fake:`` directive, in the request's text: ``fake-attack: <name> [kb=<KiB>]``

    gzip_bomb         a whole answer sent ``Content-Encoding: gzip`` although the gateway asked for
                      ``identity``, inflating to kb KiB (default 1 GiB from ~1 MiB on the wire)
    unterminated_sse  a 200 ``text/event-stream`` whose first event never ends: ``data: {"choices":[{"delta":
                      {"content":"aaaa…`` for kb KiB (default 100 MiB), then the connection closes
    huge_whole        a whole JSON answer of kb KiB (default 100 MiB), framed by its Content-Length
    spoof_headers     the normal whole answer, with ``x-aimeter-*`` headers that try to speak for the gateway

Only the body's bytes are looked at (one substring test per request), so the normal path stays as it was.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Any, NamedTuple

import orjson
from aiohttp import web

_MARK = b"fake-attack:"
_ATTACK = re.compile(rb"fake-attack:\s*([a-z_]+)(?:\s+kb=(\d+))?")
_DEFAULT_KB = {"gzip_bomb": 1024 * 1024, "unterminated_sse": 100 * 1024, "huge_whole": 100 * 1024,
               "spoof_headers": 0}
_PIECE = 64 * 1024


class Attack(NamedTuple):
    name: str
    size: int  # bytes of the hostile part


def requested_attack(raw: bytes) -> Attack | None:
    """The attack a request asks for, or None (the common case: one substring test)."""
    if _MARK not in raw:
        return None
    found = _ATTACK.search(raw)
    name = found.group(1).decode() if found else ""
    if name not in _DEFAULT_KB:
        return Attack("unknown", 0)
    kb = int(found.group(2)) if found and found.group(2) else _DEFAULT_KB[name]
    return Attack(name, kb * 1024)


@functools.lru_cache(maxsize=4)
def gzip_bomb(size: int) -> bytes:
    """gzip of ``size`` spaces (JSON whitespace), compressed ~1000:1; built once per size."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    piece = b" " * (1024 * 1024)
    parts = [packer.compress(piece) for _ in range(size // len(piece))]
    parts += [packer.compress(b" " * (size % len(piece))), packer.flush()]
    return b"".join(parts)


async def hostile_answer(request: web.Request, attack: Attack, whole: dict[str, Any],
                         headers: dict[str, str]) -> web.StreamResponse:
    """The answer ``attack`` names (see the module docstring)."""
    if attack.name == "gzip_bomb":
        return web.Response(body=gzip_bomb(attack.size), headers={
            **headers, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    if attack.name == "unterminated_sse":
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"delta":{"content":"')
        piece = b"a" * _PIECE
        for _ in range(attack.size // _PIECE):
            await response.write(piece)
        await response.write_eof()
        return response
    if attack.name == "huge_whole":
        body = orjson.dumps({**whole, "padding": "a" * attack.size})
        return web.Response(body=body, headers={**headers, "Content-Type": "application/json"})
    if attack.name == "spoof_headers":
        return web.Response(body=orjson.dumps(whole), headers={
            **headers, "Content-Type": "application/json", "X-Aimeter-Event-Id": "spoofed-by-upstream",
            "X-Aimeter-Team": "someone-else"})
    return web.Response(status=400, text=f"unknown fake-attack; known: {', '.join(_DEFAULT_KB)}")
