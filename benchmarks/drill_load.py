"""The drill's load: paced requests through every gateway with the official openai SDK, each answer recorded.

Every answer the gateway metered carries ``x-aimeter-event-id``; the drill compares those ids with the ids in
ClickHouse. A second, slower stream per gateway uses the key the drill revokes, so the time from revocation to
each replica's first refusal is measured to one tick of that stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import openai

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fake: prompt=1000 completion=100"}]}
MAX_IN_FLIGHT = 64  # per stream: a stalled gateway makes the stream skip ticks rather than pile up tasks


@dataclass(frozen=True)
class Answer:
    gateway: int
    key: str  # the key's label, not the key
    sent_at: float  # time.monotonic() when the request was started
    status: int  # HTTP status; 0: no answer (connection error or timeout)
    event_id: str | None
    error: str = ""
    done_at: float = 0.0  # time.monotonic() when its answer (or error) was back: the gateway decided before this


@dataclass
class Stream:
    gateway: int
    url: str
    key_label: str
    key: str
    rate: float  # requests per second
    skipped: int = 0
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)


class Load:
    """Runs on its own thread with its own event loop, from :meth:`start` until :meth:`stop`."""

    def __init__(self, streams: list[Stream]) -> None:
        self.streams = streams
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="drill-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the load generator did not finish its in-flight requests within {timeout:.0f} s")

    async def _main(self) -> None:
        await asyncio.gather(*(self._run(s) for s in self.streams))

    async def _run(self, stream: Stream) -> None:
        client = openai.AsyncOpenAI(base_url=f"{stream.url}/v1", api_key=stream.key, max_retries=0, timeout=30.0)
        period, next_at = 1.0 / stream.rate, time.monotonic()
        try:
            while not self._stop.is_set():
                if len(stream.in_flight) >= MAX_IN_FLIGHT:
                    stream.skipped += 1
                else:
                    task = asyncio.create_task(self._one(client, stream))
                    stream.in_flight.add(task)
                    task.add_done_callback(stream.in_flight.discard)
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if stream.in_flight:
                await asyncio.gather(*stream.in_flight)
        finally:
            await client.close()

    async def _one(self, client: openai.AsyncOpenAI, stream: Stream) -> None:
        sent = time.monotonic()
        try:
            raw = await client.chat.completions.with_raw_response.create(**BODY)  # type: ignore[call-overload]
            answer = Answer(stream.gateway, stream.key_label, sent, raw.status_code,
                            raw.headers.get("x-aimeter-event-id"), done_at=time.monotonic())
        except openai.APIStatusError as exc:
            answer = Answer(stream.gateway, stream.key_label, sent, exc.status_code,
                            exc.response.headers.get("x-aimeter-event-id"), str(exc)[:200], time.monotonic())
        except openai.APIConnectionError as exc:
            answer = Answer(stream.gateway, stream.key_label, sent, 0, None, repr(exc)[:200], time.monotonic())
        self.answers.append(answer)
