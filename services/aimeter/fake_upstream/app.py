"""The fake upstream LLM server: aiohttp app, route table, command line.

Real LLM APIs are unreachable here, so the demo, the tests and the benchmarks talk to this
server instead. What each answer contains (usage, length, chunks, latency, errors) is set by
a directive in the request body; see `aimeter.fake_upstream.plan` for the grammar and the
default-usage rule, and `aimeter.fake_upstream.wire` for the request flow every API shares.

Routes (one row per endpoint, from the API modules):

    POST /v1/chat/completions                        OpenAI Chat Completions (and vLLM, SGLang, TGI, llama.cpp)
    POST /v1/completions                             OpenAI legacy Completions
    POST /v1/embeddings                              OpenAI Embeddings
    POST /v1/responses                               OpenAI Responses
    POST /v1/messages                                Anthropic Messages
    POST /v1beta/models/{model}:generateContent      Gemini (also under /v1, google-genai 3.x's default)
    POST /v1beta/models/{model}:streamGenerateContent  Gemini stream (`?alt=sse`: SSE, else a JSON array)
    POST /api/chat, POST /api/generate               Ollama (NDJSON stream unless `"stream": false`)
    GET  /v1/organization/usage/{completions,embeddings}, /v1/organization/costs  OpenAI admin usage, costs
    GET  /v1/organizations/usage_report/messages, /v1/organizations/cost_report  Anthropic admin usage and cost
    POST, DELETE /fake-admin/books                   seed / clear the books the admin routes answer from
    GET  /health                                     liveness
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import orjson
from aiohttp import web

from aimeter.fake_upstream import admin_anthropic, admin_books, admin_openai, native_api, openai_api
from aimeter.fake_upstream import openai_shapes as shapes
from aimeter.fake_upstream.wire import LATENCY_MS_KEY, Handler

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024


async def health(_request: web.Request) -> web.Response:
    """GET /health: liveness for the demo scripts and the benchmark harness."""
    return web.Response(text="ok")


async def not_found(request: web.Request) -> web.Response:
    """Any other path or method: OpenAI's 'Invalid URL' error, not aiohttp's HTML page."""
    body = shapes.error_object(f"Invalid URL ({request.method} {request.path})", "invalid_request_error")
    return web.Response(status=404, body=orjson.dumps(body), content_type="application/json")


# (method, path, handler): one line per endpoint, each API module contributing its rows.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/health", health),
    *openai_api.ROUTES,
    *openai_api.AZURE_ROUTES,
    *native_api.ROUTES,
    *admin_openai.ROUTES,
    *admin_anthropic.ROUTES,
    *admin_books.CONTROL_ROUTES,
)


def make_app(latency_ms: float = 0.0) -> web.Application:
    """Build the app; `latency_ms` delays every answer unless a directive overrides it."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[LATENCY_MS_KEY] = float(latency_ms)
    admin_books.setup(app)
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
    parser = argparse.ArgumentParser(description="Fake LLM upstream (OpenAI, Anthropic, Gemini, Ollama shapes) "
                                                 "for ai-meter tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve_until_signal(args.host, args.port, args.latency_ms))


if __name__ == "__main__":
    main()
