"""The gateway as a raw ASGI app: routing by exact path, no framework on the hot path.

DESIGN.md measured raw ASGI on uvicorn at ~2.4x FastAPI routing; the request path here is
read body -> route model -> forward -> relay -> hand the event to the publisher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import orjson
from uuid6 import uuid7

from aimeter.config import Backend, BackendKind, GatewayConfig, resolve_credential
from aimeter.events import Attribution, UsageEvent
from aimeter.gateway.attribution import AttributionError, attribution_from_headers
from aimeter.gateway.proxy import Forwarder, Outcome, Receive, Send, now, prepare_body, send_error

log = logging.getLogger(__name__)

OPENAI_KINDS = {BackendKind.OPENAI, BackendKind.OPENAI_COMPATIBLE}


class EventSink(Protocol):
    def publish(self, event: UsageEvent) -> None: ...


class BodyTooLargeError(Exception):
    pass


@dataclass(frozen=True)
class Request:
    """The parts of an incoming request the gateway needs, parsed once."""

    body: bytes
    json: dict[str, Any]
    model: str
    attribution: Attribution


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class Gateway:
    def __init__(self, config: GatewayConfig, sink: EventSink, *, gateway_id: str, max_body_bytes: int,
                 upstream_timeout_s: float, credentials: Callable[[Backend], str | None] = resolve_credential) -> None:
        self.config = config
        self.sink = sink
        self.gateway_id = gateway_id
        self.max_body_bytes = max_body_bytes
        self.forwarder = Forwarder(upstream_timeout_s)
        # Credentials are read once at start, from env or secret files; clients never supply them.
        self._credentials = {name: credentials(b) for name, b in config.backends.items()}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.forwarder.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.forwarder.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health" and method == "GET":
            await _plain(send, 200, b"ok")
        elif path == "/v1/chat/completions":
            if method != "POST":
                await send_error(send, 405, f"{method} is not allowed on {path}; use POST")
                return
            await self._chat(scope, receive, send)
        else:
            await send_error(send, 404, f"no route for {method} {path}")

    async def _parse(self, scope: dict[str, Any], receive: Receive, send: Send) -> Request | None:
        """Read and validate the request; answers the client itself and returns None when it is bad."""
        try:
            body = await read_body(receive, self.max_body_bytes)
        except BodyTooLargeError:
            await send_error(send, 413, f"request body exceeds the gateway limit of {self.max_body_bytes} bytes")
            return None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            await send_error(send, 400, f"request body is not valid JSON: {exc}")
            return None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("model"), str) or not parsed["model"]:
            await send_error(send, 400, "request body must be a JSON object with a string `model`", "model")
            return None
        user = parsed.get("user") if isinstance(parsed.get("user"), str) else ""
        try:
            attribution = attribution_from_headers(_headers(scope), user)
        except AttributionError as exc:
            await send_error(send, 400, str(exc), exc.header)
            return None
        return Request(body, parsed, parsed["model"], attribution)

    async def _chat(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = now()
        request = await self._parse(scope, receive, send)
        if request is None:
            return
        routed = self.config.route(request.model)
        if routed is None:
            await send_error(send, 404, f"The model `{request.model}` is not configured on this gateway", "model")
            return
        name, backend, route = routed
        stream = request.json.get("stream") is True
        body, injected = prepare_body(request.body, request.json, route.upstream_model,
                                      want_usage=backend.kind in OPENAI_KINDS)
        headers = {"content-type": "application/json"}
        if credential := self._credentials[name]:
            headers["authorization"] = f"Bearer {credential}"
        url = str(backend.base_url).rstrip("/") + "/chat/completions"
        event_id = uuid7()
        outcome = await self.forwarder.forward(url, body, headers, send, receive, stream=stream,
                                               strip_usage=injected, event_id=str(event_id))
        self._emit(request, name, backend, outcome, event_id=event_id, started=started, stream=stream,
                   api="openai.chat")

    def _emit(self, request: Request, name: str, backend: Backend, outcome: Outcome, *, event_id: UUID,
              started: datetime, stream: bool, api: str) -> None:
        """Build and hand off the event after the response is done; a metering fault never reaches the client."""
        try:
            event = UsageEvent(
                event_id=event_id, gateway_id=self.gateway_id, started_at=started,
                first_token_at=outcome.first_token_at if stream else None, ended_at=now(), api=api,
                backend=name, provider=backend.provider, deployment=backend.deployment,
                model_requested=request.model, model_served=outcome.extracted.model_served[:128], stream=stream,
                status=outcome.status, http_status=outcome.http_status, usage_source=outcome.extracted.source,
                usage=outcome.extracted.usage, backend_compute_seconds=outcome.extracted.compute_seconds,
                attribution=request.attribution,
            )
            self.sink.publish(event)
        except Exception:
            log.exception("could not build or publish the usage event for model %s", request.model)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
