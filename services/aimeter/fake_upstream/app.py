"""The fake upstream LLM server: aiohttp app, OpenAI Chat Completions handler, command line.

Real LLM APIs are unreachable here, so the demo, the tests and the benchmarks talk to this
server instead. What each answer contains (usage, length, chunks, latency, errors) is set by
a directive in the request body; see `aimeter.fake_upstream.plan` for the grammar and the
default-usage rule.

New APIs (Responses, Anthropic Messages, Gemini, Ollama) plug in as modules whose
(method, path, handler) rows are added to `ROUTES`, sharing the directive grammar.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from aimeter.fake_upstream import openai_shapes as shapes
from aimeter.fake_upstream.plan import Plan, RequestError, build_plan

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024

LATENCY_MS_KEY = web.AppKey("fake_upstream_latency_ms", float)
_RUN_ID = secrets.token_hex(4)
_SEQ = itertools.count(1)
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, obj: dict[str, Any], request_id: str) -> web.Response:
    """An orjson-encoded JSON response carrying OpenAI's `x-request-id` header."""
    return web.Response(
        status=status, body=orjson.dumps(obj), content_type="application/json", headers={"x-request-id": request_id}
    )


def _next_ids() -> tuple[str, str]:
    """A (completion id, request id) pair: unique per process run, cheap to make."""
    seq = next(_SEQ)
    return f"chatcmpl-{_RUN_ID}{seq:016d}", f"req_{_RUN_ID}{seq:016d}"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions: OpenAI's endpoint, also spoken by vLLM, SGLang, TGI, llama.cpp."""
    completion_id, request_id = _next_ids()
    try:
        plan = build_plan(await request.read(), request.app[LATENCY_MS_KEY])
    except RequestError as err:
        body = shapes.error_object(err.message, "invalid_request_error", err.param, err.code)
        return _json(400, body, request_id)
    if plan.latency_s > 0:
        await asyncio.sleep(plan.latency_s)
    if plan.status is not None:
        return _json(plan.status, shapes.simulated_error(plan.status, plan.model), request_id)
    env = shapes.Envelope(id=completion_id, created=int(time.time()), model=plan.model)
    if plan.stream:
        return await _stream(request, plan, env, request_id)
    content = shapes.content_text(plan.words)
    return _json(200, shapes.completion_object(env, content, plan.finish_reason, plan.usage), request_id)


async def _stream(request: web.Request, plan: Plan, env: shapes.Envelope, request_id: str) -> web.StreamResponse:
    """Send the SSE stream; a client leaving early is expected (cancellation tests), not an error."""
    response = web.StreamResponse(headers={**_SSE_HEADERS, "x-request-id": request_id})
    await response.prepare(request)
    head = shapes.stream_head(env, plan.style)
    content = shapes.stream_content(env, plan.style, shapes.content_pieces(plan.words, plan.chunks))
    try:
        if plan.drop is not None:
            await _write_paced(response, head, content[: plan.drop], plan.gap_s)
            _cut_connection(request)
        else:
            await _write_all(
                response, head, content, shapes.stream_tail(env, plan.style, plan.finish_reason, plan.usage), plan.gap_s
            )
    except ConnectionResetError:
        log.debug("client left stream %s early", env.id)
    return response


async def _write_all(
    response: web.StreamResponse, head: bytes, content: list[bytes], tail: bytes, gap_s: float
) -> None:
    """The whole stream: in one write when no gap is asked (fast), else paced per delta."""
    if gap_s <= 0:
        await response.write(b"".join((head, *content, tail)))
    else:
        await _write_paced(response, head, content, gap_s)
        await response.write(tail)
    await response.write_eof()


async def _write_paced(response: web.StreamResponse, head: bytes, content: list[bytes], gap_s: float) -> None:
    """Write the head, then each content frame after `gap_s`, for time-to-first-token tests."""
    await response.write(head)
    for frame in content:
        await asyncio.sleep(gap_s)
        await response.write(frame)


def _cut_connection(request: web.Request) -> None:
    """Simulate an upstream dying mid-stream: no finish, no usage, no [DONE], connection closed."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def health(_request: web.Request) -> web.Response:
    """GET /health: liveness for the demo scripts and the benchmark harness."""
    return web.Response(text="ok")


async def not_found(request: web.Request) -> web.Response:
    """Any other path or method: OpenAI's 'Invalid URL' error, not aiohttp's HTML page."""
    body = shapes.error_object(f"Invalid URL ({request.method} {request.path})", "invalid_request_error")
    return web.Response(status=404, body=orjson.dumps(body), content_type="application/json")


# (method, path, handler): one line per endpoint; other APIs add their own modules' rows.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/health", health),
    ("POST", "/v1/chat/completions", chat_completions),
)


def make_app(latency_ms: float = 0.0) -> web.Application:
    """Build the app; `latency_ms` delays every answer unless a directive overrides it."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[LATENCY_MS_KEY] = float(latency_ms)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def serve(host: str, port: int, latency_ms: float = 0.0) -> web.AppRunner:
    """Start listening (port 0 picks a free one, see `bound_port`); caller awaits `runner.cleanup()`."""
    runner = web.AppRunner(make_app(latency_ms), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port a started runner listens on, for servers started on port 0."""
    return int(runner.addresses[0][1])


async def _serve_until_signal(host: str, port: int, latency_ms: float) -> None:
    """Serve until SIGINT or SIGTERM, then close connections cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await serve(host, port, latency_ms)
    log.info("fake upstream listening on http://%s:%d (latency %.1f ms)", host, bound_port(runner), latency_ms)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m aimeter.fake_upstream.app --port 8090 --latency-ms 0`."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream for ai-meter tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_until_signal(args.host, args.port, args.latency_ms))


if __name__ == "__main__":
    main()
