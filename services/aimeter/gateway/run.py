"""Runs the gateway process: our HTTP/1.1 server (or uvicorn) serving the raw ASGI app, with the Kafka publisher.

``AIMETER_GATEWAY_SERVER=native`` (default) is ``aimeter.gateway.server``, built for this app's hot path;
``uvicorn`` stays selectable to compare the two and as an operator fallback.
"""

from __future__ import annotations

import gc
import signal
import socket
import sys

import uvicorn
import uvloop

from aimeter.config import GatewayConfig
from aimeter.gateway.app import Gateway
from aimeter.gateway.keys import KeyFile
from aimeter.gateway.publisher import KafkaPublisher
from aimeter.gateway.server import Server, StartupError
from aimeter.gateway.server_conn import Limits
from aimeter.kafka_admin import ensure_topics_in_background
from aimeter.settings import Settings


def _tune_gc() -> None:
    """Garbage-collector settings applied once the app has started (they concern latency)."""
    # Everything alive now (modules, pydantic schemas, config: ~50k objects) lives as long as the process.
    # Frozen, it is no longer traversed by the collector; without this, each full collection under load
    # walked all of it and paused the event loop for ~20 ms, the tail of the latency distribution.
    gc.collect()
    gc.freeze()
    # A request's objects are freed by reference counting (measured: no cyclic garbage per request), yet
    # the young generation filled to the default 700 with the objects of in-flight requests and the
    # collector ran every ~50 requests, finding nothing. 7,000 leaves it idle in steady state (~5 us of
    # CPU per request saved); when it does run, it takes ~2 ms.
    gc.set_threshold(7000, 10, 10)


class _UvicornServer(uvicorn.Server):
    """uvicorn (AIMETER_GATEWAY_SERVER=uvicorn), with the same garbage-collector settings after startup."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            _tune_gc()


def run_gateway(settings: Settings, config: GatewayConfig, bootstrap: str) -> None:
    """Serve until SIGTERM/SIGINT, then flush the publisher; undelivered events go to the spool."""
    ensure_topics_in_background(bootstrap, "gateway")  # the gateway serves (and journals) before Kafka answers
    spool_dir = settings.resolved_spool_dir
    publisher = KafkaPublisher(
        bootstrap, spool_dir / f"{settings.gateway_id}.jsonl", source=f"/aimeter/gateway/{settings.gateway_id}",
        counts_path=settings.data_dir / "counts" / f"{settings.gateway_id}.json",
        journal_dir=spool_dir / f"{settings.gateway_id}.journal", journal_segment_bytes=settings.journal_segment_bytes,
        delivery_timeout_s=settings.kafka_delivery_timeout_s, spool_max_bytes=settings.spool_max_bytes,
        fail_closed=settings.spool_full_policy == "closed")
    publisher.start()
    keys = KeyFile(settings.resolved_keys_file) if settings.auth == "keys" else None
    app = Gateway(config, publisher, gateway_id=settings.gateway_id, max_body_bytes=settings.max_body_bytes,
                  upstream_timeout_s=settings.upstream_timeout_s, keys=keys,
                  upstream_max_body_bytes=settings.upstream_max_body_bytes,
                  max_concurrent_per_key=settings.max_concurrent_per_key)
    auth = f"keys from {settings.resolved_keys_file}" if keys else "NONE (auth=none: team from X-Aimeter-Team)"
    print(f"gateway: listening on http://{settings.gateway_host}:{settings.gateway_port}; auth: {auth}; "
          f"server: {settings.gateway_server}", flush=True)
    # uvicorn re-raises the signal that stopped it once it is done (the native server restores this handler);
    # with the default SIGTERM action that would kill us before the publisher is flushed and undelivered
    # events are spooled. Ignore it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        if settings.gateway_server == "native":
            limits = Limits(settings.gateway_head_timeout_s, settings.gateway_body_timeout_s,
                            settings.gateway_max_connections_per_peer)
            server = Server(app, settings.gateway_host, settings.gateway_port, keep_alive_s=30.0,
                            on_started=_tune_gc, limits=limits)
            try:
                uvloop.run(server.serve())
            except StartupError as exc:
                print(f"gateway: startup failed: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(3) from None
        else:
            # uvicorn's loop="uvloop" only applies when uvicorn creates the loop; we create it, so ask here.
            uvloop.run(_UvicornServer(uvicorn.Config(
                app, host=settings.gateway_host, port=settings.gateway_port, lifespan="on", access_log=False,
                log_level="warning", loop="uvloop", http="httptools", timeout_keep_alive=30,
                # No X-Forwarded-* rewriting (the gateway never uses the client address) and no Server/Date
                # headers: work per request that nothing reads.
                proxy_headers=False, server_header=False, date_header=False,
            )).serve())
    finally:
        publisher.close()
        stats = publisher.stats
        print(f"gateway: stopped; events emitted={stats.emitted} journaled={publisher.journal.appended} "
              f"unjournaled={publisher.journal.unjournaled} spooled={stats.spooled} replayed={stats.replayed} "
              f"held={stats.held} dropped={stats.dropped}", flush=True)
