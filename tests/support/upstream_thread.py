"""The project's fake upstream on a free loopback port, in its own thread and event loop.

For tests whose gateway runs in-process on another loop (tests/support/http_server.serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from aimeter.fake_upstream.app import bound_port, serve


@contextlib.contextmanager
def fake_upstream_thread() -> Iterator[int]:
    """Yield the port; the server stops when the block ends."""
    ready, state = threading.Event(), dict[str, Any]()

    async def main() -> None:
        runner = await serve("127.0.0.1", 0)
        state["port"], state["loop"], state["stop"] = bound_port(runner), asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await state["stop"].wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the fake upstream did not start within 10 s")
    try:
        yield state["port"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)
