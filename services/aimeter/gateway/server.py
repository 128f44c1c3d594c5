"""The gateway's own HTTP/1.1 server for its ASGI app: listener, lifespan and graceful shutdown.

It replaces uvicorn on the hot path (see ``server_conn``) and keeps what uvicorn gave the gateway:
the ASGI lifespan (startup failure stops the process), keep-alive idle timeout, and on SIGTERM or
SIGINT a graceful stop: no new connections, in-flight requests finish (bounded), idle keep-alive
connections close, then lifespan shutdown, and ``serve()`` returns so the caller flushes its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

from aimeter.gateway.server_conn import ASGI_VERSION, App, Connection, Limits, Shared

log = logging.getLogger("aimeter.gateway.server")

BACKLOG = 2048
TASK_GRACE_S = 5.0  # after connections are cut, how long an app gets to notice and finish (e.g. emit its event)


class StartupError(RuntimeError):
    """The app's lifespan startup failed; the message is the app's or the exception's."""


class Lifespan:
    """ASGI lifespan as uvicorn runs it with ``lifespan="on"``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failure: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.failure is not None:
            raise StartupError(self.failure)

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped.wait()

    async def _main(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": ASGI_VERSION, "state": {}}, self.inbox.get, self._send)
            if not self.started.is_set():
                self.failure = "the app's lifespan returned before reporting startup complete"
        except Exception as exc:
            if not self.started.is_set():
                self.failure = f"exception in the app's lifespan startup: {exc!r}"
            log.exception("exception in the app's lifespan")
        finally:
            self.started.set()
            self.stopped.set()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = message.get("message") or "the app reported lifespan startup failed"
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            log.error("app lifespan shutdown failed: %s", message.get("message", ""))
            self.stopped.set()


def bind(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """One listening socket on exactly host:port (as uvicorn binds it), SO_REUSEADDR for quick restarts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Server:
    """Serves ``app`` until ``stop()`` (or SIGTERM/SIGINT when ``install_signals``), then drains and returns."""

    def __init__(self, app: App, host: str, port: int, *, keep_alive_s: float = 30.0, graceful_s: float = 30.0,
                 install_signals: bool = True, on_started: Callable[[], None] | None = None,
                 limits: Limits | None = None) -> None:
        self.app, self.host, self.port = app, host, port
        self.limits = limits or Limits()
        self.keep_alive_s, self.graceful_s = keep_alive_s, graceful_s
        self.install_signals, self.on_started = install_signals, on_started
        self.sockets: list[socket.socket] = []
        self._stop: asyncio.Event | None = None
        self._force = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        """Begin a graceful stop; a second call stops without waiting for in-flight requests. Thread-safe."""
        loop, event = self._loop, self._stop
        if loop is None or event is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: it has stopped anyway
            loop.call_soon_threadsafe(self._request_stop)

    def _request_stop(self) -> None:
        assert self._stop is not None
        if self._stop.is_set():
            self._force = True
        self._stop.set()

    async def serve(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        lifespan = Lifespan(self.app)
        await lifespan.startup()  # raises StartupError
        shared = Shared(self.app, loop, self.keep_alive_s, self.limits)
        try:
            sock = bind(self.host, self.port)
        except OSError:
            await lifespan.shutdown()
            raise
        listener = await loop.create_server(lambda: Connection(shared), sock=sock, backlog=BACKLOG)
        self.sockets = [sock]
        previous = self._trap_signals(loop) if self.install_signals else {}
        try:
            if self.on_started is not None:
                self.on_started()
            await self._stop.wait()
            await self._drain(listener, shared)
            await lifespan.shutdown()
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)  # e.g. run.py's "ignore SIGTERM" while the publisher flushes

    def _trap_signals(self, loop: asyncio.AbstractEventLoop) -> dict[signal.Signals, Any]:
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, self._request_stop)
        return previous

    async def _drain(self, listener: asyncio.Server, shared: Shared) -> None:
        listener.close()  # no new connections
        shared.stopping = True
        for conn in list(shared.connections):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.graceful_s
        # Polled, as uvicorn does: the condition spans two sets and a second signal.
        while (shared.connections or shared.tasks) and loop.time() < deadline and not self._force:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if shared.connections:
            log.warning("graceful shutdown: cutting %d connection(s) still busy", len(shared.connections))
            for conn in list(shared.connections):
                conn.transport.abort()  # the app sees http.disconnect and can still record what happened
        if shared.tasks:
            _, pending = await asyncio.wait(set(shared.tasks), timeout=0 if self._force else TASK_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
