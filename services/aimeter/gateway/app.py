"""The gateway as a raw ASGI app served by ``server.py``: routing by the provider registry's tables, no framework.

Raw ASGI measured ~2.4x FastAPI routing. Nothing here names a provider: routes, keys, upstream URLs, usage and
error shapes come from ``aimeter.gateway.providers``. The request path is:
route -> key -> body -> model -> backend -> forward -> relay -> hand the event to the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import orjson

from aimeter.budgets.gate import BudgetGate
from aimeter.budgets.ledger import Refusal
from aimeter.config import Backend, GatewayConfig, ModelRoute, resolve_credential
from aimeter.events import Attribution, Status, UsageSource
from aimeter.events.ids import new_event_id
from aimeter.gateway.attribution import AttributionError, attribution_for
from aimeter.gateway.event_json import encode_usage_event
from aimeter.gateway.http1 import MAX_BODY
from aimeter.gateway.keys import KeyRecord, KeyStore, verify
from aimeter.gateway.metrics import GatewayMeter, exposition, registry_for
from aimeter.gateway.providers import (
    match_route,
    model_list_for,
    presented_key,
    upstream_for,
)
from aimeter.gateway.providers.base import Match, ModelList
from aimeter.gateway.providers.openai import openai_error
from aimeter.gateway.proxy import Call, Forwarder, Outcome, Receive, Send, now, prepare_body, send_json
from aimeter.gateway.ratelimit_gate import RateGate
from aimeter.gateway.streams import settle, usage_flags, usage_problem
from aimeter.gateway.usage import Extracted
from aimeter.metrics_auth import MetricsDenied, check_scrape

log = logging.getLogger(__name__)
MAX_TIER_LEN = 128  # an event label's bound: a longer value is not a tier
KEY_RELOAD_S = 1.0
SETTLE_WAIT_S = 1.0  # GET /budgets: how long the answer waits for settles in flight (then shows them reserved)


class EventSink(Protocol):
    def publish_encoded(self, payload: bytes, event_id: str, started_at: datetime, ended_at: datetime) -> None: ...

    def accepting(self) -> bool: ...

    def metrics(self) -> dict[str, float]: ...


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    """The client hung up (or was timed out) before its request body was complete: nobody to answer."""


class Rejected(Exception):  # noqa: N818 - a control-flow signal, not an error of ours
    """The request is answered with an error in its API's shape; no upstream call, no event."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.headers = headers  # sent with the error (a rate limit's retry-after and x-ratelimit-*)


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
            raise ClientGoneError(f"client went away after {size} bytes of its request body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def body_user(request: dict[str, Any]) -> str:
    """OpenAI's ``user`` field or Anthropic's ``metadata.user_id``."""
    user = request.get("user")
    if isinstance(user, str):
        return user
    metadata = request.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user_id if isinstance(user_id, str) else ""


class Gateway:
    def __init__(self, config: GatewayConfig, sink: EventSink, *, gateway_id: str, max_body_bytes: int,
                 upstream_timeout_s: float, keys: KeyStore | None,
                 credentials: Callable[[Backend], str | None] = resolve_credential,
                 upstream_max_body_bytes: int = MAX_BODY, max_concurrent_per_key: int = 0,
                 metrics_token: str | None = None, tracer: Any = None, budgets: BudgetGate | None = None) -> None:
        self.config = config
        self.sink = sink
        self.gateway_id = gateway_id
        self.max_body_bytes = max_body_bytes
        self.keys = keys
        self.forwarder = Forwarder(upstream_timeout_s, max_body=upstream_max_body_bytes)
        self.max_concurrent_per_key = max_concurrent_per_key  # 0: no limit
        self._in_flight: dict[str, int] = {}  # key id -> requests of that key being served now
        # Credentials are read once at start, from env or secret files; clients never supply them.
        self._credentials = {name: credentials(b) for name, b in config.backends.items()}
        self._upstreams = {name: upstream_for(b, self._credentials[name]) for name, b in config.backends.items()}
        self._reloader: asyncio.Task[None] | None = None
        # /metrics (Prometheus): served only with a token (metrics_auth.py); None leaves it unserved.
        self.metrics_token = metrics_token
        self.meter = GatewayMeter()
        self._registry = registry_for(self.meter, sink.metrics)
        self.tracer = tracer  # OpenTelemetry (otel.py): None unless AIMETER_OTEL_ENDPOINT is set
        self.budgets = budgets  # USD budgets (aimeter.budgets): None when the config declares none
        self.rate_gate = RateGate(config.rate_limits)  # requests and tokens per minute (ratelimit_gate.py)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.forwarder.start()
                if self.keys is not None:
                    self.keys.refresh()
                    self._reloader = asyncio.create_task(self._reload_keys())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._reloader is not None:
                    self._reloader.cancel()
                await self.forwarder.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _reload_keys(self) -> None:
        """A key file's new and revoked keys take effect within KEY_RELOAD_S, without a restart (the Kafka store
        needs no polling: its reader thread applies each record as it arrives, and refresh() does nothing)."""
        assert self.keys is not None
        while True:
            await asyncio.sleep(KEY_RELOAD_S)
            with contextlib.suppress(OSError, ValueError):  # a half-edited file keeps the last good set
                self.keys.refresh()

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health" and method == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if path == "/metrics" and method == "GET":
            await self._metrics(scope, send)
            return
        if path == "/budgets" and method == "GET":  # this replica's budget ledger, behind the metrics token
            await self._metrics(scope, send, budgets=True)
            return
        if method == "GET":
            headers = _headers(scope)
            listing = model_list_for(path, headers)
            if listing is not None:
                await self._list_models(listing, headers, scope, send)
                return
        match = match_route(path)
        if match is None:
            await send_json(send, 404, openai_error(404, f"no route for {method} {path}"))
            return
        try:
            if method != "POST":
                raise Rejected(405, f"{method} is not allowed on {path}; use POST")
            await self._proxy(match, scope, receive, send)
        except Rejected as exc:
            self.meter.reject(match.spec.api, exc.status)
            retry = exc.headers or ([(b"retry-after", b"1")] if exc.status == 429 else None)
            await send_json(send, exc.status, match.spec.error(exc.status, exc.message, exc.param), retry)
        except ClientGoneError as exc:  # an everyday event, not a fault: one line, no traceback
            log.info("%s %s: %s; nothing was sent upstream", method, path, exc)

    async def _metrics(self, scope: dict[str, Any], send: Send, *, budgets: bool = False) -> None:
        if self.metrics_token is None or (budgets and self.budgets is None):
            await send_json(send, 404, openai_error(404, "metrics are not served by this gateway"))
            return
        try:
            check_scrape(_headers(scope), self.metrics_token)
        except MetricsDenied as exc:
            await send_json(send, exc.status, openai_error(exc.status, str(exc)))
            return
        if budgets and self.budgets is not None:
            # Wait (up to 1 s) for the settle worker without holding the loop: requests keep being served meanwhile.
            for _ in range(int(SETTLE_WAIT_S / 0.002)):  # the worker polls no event of ours: a short sleep it is
                if self.budgets.settled():
                    break
                await asyncio.sleep(0.002)
            await send_json(send, 200, orjson.dumps(self.budgets.status(time.time(), flush=False)))
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})
        await send({"type": "http.response.body", "body": exposition(self._registry)})

    def _authenticate(self, headers: dict[str, str], query: str) -> KeyRecord | None:
        if self.keys is None:
            return None
        presented = presented_key(headers, query)
        if not presented:
            raise Rejected(401, "missing gateway API key: send the key issued by `aimeter keys create`")
        record = verify(self.keys.records, presented)
        if record is None:
            raise Rejected(401, "unknown or revoked gateway API key")
        return record

    async def _list_models(self, listing: ModelList, headers: dict[str, str], scope: dict[str, Any],
                           send: Send) -> None:
        """``GET`` a model list: the configured models whose backend speaks the list's API, in its shape."""
        query = scope.get("query_string", b"").decode("latin-1") if listing.key_in_query else ""
        try:
            self._authenticate(headers, query)
        except Rejected as exc:
            await send_json(send, exc.status, listing.error(exc.status, exc.message, exc.param))
            return
        backends = self.config.backends
        models = [(name, backends[route.backend]) for name, route in self.config.models.items()
                  if backends[route.backend].kind in listing.kinds]
        await send_json(send, 200, listing.render(models))

    async def _parse(self, match: Match, headers: dict[str, str], receive: Receive, key: KeyRecord | None) -> Request:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:  # refuse before reading a byte of it
            raise Rejected(413, f"request body of {declared} bytes exceeds the gateway limit of "
                                f"{self.max_body_bytes} bytes")
        try:
            body = await read_body(receive, self.max_body_bytes)
        except BodyTooLargeError:
            raise Rejected(413, f"request body exceeds the gateway limit of {self.max_body_bytes} bytes") from None
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Rejected(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise Rejected(400, "request body must be a JSON object")
        model = match.model or parsed.get("model")
        if not isinstance(model, str) or not model:
            raise Rejected(400, "request must name a `model` (a non-empty string)", "model")
        try:
            attribution = attribution_for(key, headers, body_user(parsed))
        except AttributionError as exc:
            raise Rejected(400, str(exc), exc.header) from None
        return Request(body, parsed, model, attribution)

    def _route(self, match: Match, model: str) -> tuple[str, Backend, ModelRoute]:
        routed = self.config.route(model)
        if routed is None:
            raise Rejected(404, f"The model `{model}` is not configured on this gateway", "model")
        name, backend, route = routed
        if backend.kind not in match.spec.kinds:
            raise Rejected(400, f"model `{model}` is served by a {backend.kind.value} backend, which does not "
                                f"speak {match.spec.api}", "model")
        return name, backend, route

    async def _proxy(self, match: Match, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started, clock = now(), time.perf_counter()  # the clock times the gateway's own share (metrics)
        if not self.sink.accepting():
            raise Rejected(503, "usage metering is unavailable: no room on the gateway's disk to journal this "
                                "request's usage event (AIMETER_SPOOL_FULL_POLICY=closed); nothing was forwarded, "
                                "retry later")
        headers = _headers(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        key = self._authenticate(headers, query if match.spec.key_in_query else "")  # ?key=: Gemini's way only
        held = self._take_slot(key)
        try:
            await self._serve(match, receive, send, headers=headers, query=query, key=key, started=started,
                              clock=clock)
        finally:
            if held is not None:
                self._give_back(held)

    def _take_slot(self, key: KeyRecord | None) -> str | None:
        """Count a request against its key's concurrency limit (O(1)); the one over it gets 429."""
        limit = self.max_concurrent_per_key
        if key is None or not limit:
            return None
        in_flight = self._in_flight.get(key.key_id, 0)
        if in_flight >= limit:
            raise Rejected(429, f"too many concurrent requests for this gateway key: {in_flight} in flight, the "
                                f"limit is {limit} (AIMETER_MAX_CONCURRENT_PER_KEY); retry when one has finished")
        self._in_flight[key.key_id] = in_flight + 1
        return key.key_id

    def _give_back(self, key_id: str) -> None:
        left = self._in_flight[key_id] - 1
        if left:
            self._in_flight[key_id] = left
        else:
            del self._in_flight[key_id]

    async def _serve(self, match: Match, receive: Receive, send: Send, *, headers: dict[str, str], query: str,
                     key: KeyRecord | None, started: datetime, clock: float) -> None:
        request = await self._parse(match, headers, receive, key)
        name, backend, route = self._route(match, request.model)
        spec = match.spec
        stream = spec.is_stream(request.json, match.method)
        rewrite = None if spec.model_in_path else route.upstream_model
        try:
            body, injected = prepare_body(request.body, request.json, rewrite, spec.inject_usage)
        except orjson.JSONEncodeError as exc:
            raise Rejected(400, f"request body cannot be re-encoded for the upstream ({exc}): it nests deeper than "
                                "the gateway's JSON encoder allows (254 levels)") from None
        event_id = str(new_event_id())
        upstream = self._upstreams[name]
        call = Call(spec, upstream.url(match, route.upstream_model or request.model, query), body,
                    upstream.headers(headers), stream, injected, event_id)
        grant = self.rate_gate.admit(key, request.attribution.team, request.json, len(request.body), spec.api)
        if grant is not None and grant.refusal:
            raise Rejected(429, grant.refusal, headers=grant.headers)
        if self.budgets is not None:  # reserve the worst case in every budget that applies (aimeter.budgets)
            try:
                self.budgets.reserve(event_id, request.attribution, backend_name=name, backend=backend,
                                     model=request.model, api=spec.api, body=request.json,
                                     body_bytes=len(request.body), now=started.timestamp())
            except Refusal as exc:
                self.rate_gate.release(grant)  # refused before any upstream call: counts no request, no tokens
                raise Rejected(429, str(exc), headers=[(b"retry-after", str(exc.retry_after).encode())]) from None
        last: list[dict[str, Any]] = []

        async def send_all_but_last(message: dict[str, Any]) -> None:
            # The answer's last message waits until its event is journaled (publisher.py): a kill -9 in
            # between loses a request the client never saw answered, never an answered one.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                last.append(message)
            else:
                if grant is not None and message["type"] == "http.response.start":
                    grant.stamp(message)  # the key's x-ratelimit-* (or anthropic-ratelimit-*) headers
                await send(message)

        # From here the request reaches the upstream, so its event is emitted whatever happens next.
        outcome = Outcome(marker=(b"x-aimeter-event-id", event_id.encode()), streamed=stream)
        outcome.began, outcome.forward_started = clock, time.perf_counter()
        try:
            await self.forwarder.forward(call, send_all_but_last, receive, outcome)
        except asyncio.CancelledError:  # the client left before the upstream answered (see server_cycle)
            outcome.status, outcome.problem = Status.CLIENT_CANCELLED, "client went away before the answer"
            raise
        except Exception as exc:
            outcome.status, outcome.problem = Status.GATEWAY_ERROR, f"gateway fault while relaying: {exc!r}"[:300]
            raise
        finally:
            outcome.forward_ended = time.perf_counter()
            self._record(request, name, backend, outcome, event_id=event_id, started=started, api=spec.api)
            self.rate_gate.settle(grant, outcome.extracted.usage)  # the reservation becomes the event's tokens
        for message in last:
            await send(message)

    def _record(self, request: Request, name: str, backend: Backend, outcome: Outcome, *, event_id: str,
                started: datetime, api: str) -> None:
        """Complete the outcome's usage and emit the event; runs in a ``finally``, so it never raises."""
        try:
            outcome.extracted = settle(outcome.extracted, request.json, stream=outcome.streamed,
                                       http_status=outcome.http_status)
        except Exception:  # noqa: BLE001 - e.g. RecursionError on a body nested ~1,000 deep: estimate anyway
            if outcome.streamed and 200 <= outcome.http_status < 300:
                outcome.extracted = _estimate_from_size(outcome.extracted, len(request.body))
        self._emit(request, name, backend, outcome, event_id=event_id, started=started, stream=outcome.streamed,
                   api=api)
        if self.budgets is not None:  # no event could be built: the reservation is committed, never leaked
            self.budgets.release(event_id)

    def _emit(self, request: Request, name: str, backend: Backend, outcome: Outcome, *, event_id: str,
              started: datetime, stream: bool, api: str) -> None:
        """Build and hand off the event after the response is done; a metering fault never reaches the client."""
        try:
            extracted, ended = outcome.extracted, now()
            payload = encode_usage_event(
                event_id=event_id, gateway_id=self.gateway_id, started_at=started,
                first_token_at=outcome.first_token_at if stream else None, ended_at=ended, api=api,
                backend=name, provider=backend.provider, deployment=backend.deployment,
                model_requested=request.model, model_served=extracted.model_served[:128], stream=stream,
                status=outcome.status, http_status=outcome.http_status, usage_source=extracted.source,
                usage=extracted.usage, backend_compute_seconds=extracted.compute_seconds,
                attribution=request.attribution, usage_problem=usage_problem(outcome.problem, extracted),
                upstream_error_type=extracted.error_type, usage_flags=usage_flags(extracted),
                **upstream_account(backend, request.json),
            )
            if self.budgets is not None:  # the reservation becomes the event's cost, priced as the pricer does
                self.budgets.settle(event_id, payload)
            self.sink.publish_encoded(payload, event_id, started, ended)
        except Exception:
            log.exception("could not build or publish the usage event for model %s", request.model)
            return
        try:
            self._observe(request, name, outcome, started=started, stream=stream, api=api)
        except Exception:
            log.exception("could not count request metrics for model %s", request.model)

    def _observe(self, request: Request, name: str, outcome: Outcome, *, started: datetime, stream: bool,
                 api: str) -> None:
        """Prometheus counters (and an OpenTelemetry span when enabled) for one forwarded request."""
        usage = outcome.extracted.usage
        # After the event was journaled (the gateway's time too); perf_counter: 0.12 us, datetime.now(UTC): ~0.85.
        total_s = time.perf_counter() - outcome.began
        first = outcome.first_token_at
        ttft_s = (first - started).total_seconds() if stream and first is not None else None
        self.meter.request(api, name, request.model, request.attribution.team, outcome.status.value, total_s,
                           outcome.forward_ended - outcome.forward_started, ttft_s, usage.input_tokens,
                           usage.output_tokens, usage.cache_read_input_tokens)
        if self.tracer is not None:
            self.tracer.request(api=api, backend=name, request=request, outcome=outcome, started=started,
                                total_s=total_s, ttft_s=ttft_s)


def _estimate_from_size(extracted: Extracted, body_bytes: int) -> Extracted:
    """Input tokens from the body's size, when its text could not be walked: an over-estimate, never 0."""
    if extracted.source is UsageSource.REPORTED or extracted.usage.input_tokens:
        return extracted
    usage = extracted.usage.model_copy(update={"input_tokens": -(-body_bytes // 4)})
    problem = "; ".join(p for p in (extracted.problem, "input tokens estimated from the body's size") if p)
    return replace(extracted, usage=usage, source=UsageSource.ESTIMATED, problem=problem)


def upstream_account(backend: Backend, body: dict[str, Any]) -> dict[str, str]:
    """The event's provider-account fields: the ids the backend config declares (never the key) and the service
    tier the request asked for, so usage can be grouped as the provider's own reports group it."""
    account = backend.account
    tier = body.get("service_tier")
    scope = (account.project_id or account.workspace_id or "") if account is not None else ""
    return {"credential_id": account.credential_id if account is not None else "", "upstream_project": scope,
            "service_tier": tier if isinstance(tier, str) and len(tier) <= MAX_TIER_LEN else ""}
