"""Runs the gateway process: its own HTTP/1.1 server (``server.py``) serving the raw ASGI app, with the publisher.

One server: the uvicorn fallback was dropped, since the deadlines, per-address cap and cancellation of abandoned
requests (SECURITY.md) exist only in ``server.py``, and no test or operator needed the other.
"""

from __future__ import annotations

import gc
import signal
import sys

import uvloop

from aimeter.budgets.setup import gate_for
from aimeter.config import GatewayConfig
from aimeter.gateway.app import Gateway
from aimeter.gateway.keys import KeyFile, KeyStore
from aimeter.gateway.keys_kafka import KafkaKeyStore, describe
from aimeter.gateway.publisher import KafkaPublisher
from aimeter.gateway.server import Server, StartupError
from aimeter.gateway.server_conn import Limits
from aimeter.kafka_admin import ensure_topics_in_background
from aimeter.metrics_auth import ensure_token
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


def _tracer(settings: Settings, config: GatewayConfig) -> object | None:
    """OpenTelemetry only when configured: otherwise its SDK is not even imported."""
    if not settings.otel_endpoint:
        return None
    try:
        from aimeter.gateway.otel import otlp_recorder  # noqa: PLC0415 - optional, off by default
    except ImportError as exc:
        print(f"gateway: AIMETER_OTEL_ENDPOINT is set but the OpenTelemetry SDK is missing ({exc}); install "
              "the otel extra: pip install 'aimeter[otel]'", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return otlp_recorder(settings.otel_endpoint, settings.gateway_id, config)


def _key_store(settings: Settings, bootstrap: str) -> KeyStore | None:
    """The keys topic (read to its end before serving, when Kafka answers in time), or the key file."""
    if settings.auth != "keys":
        return None
    if settings.keys_store == "file":
        return KeyFile(settings.resolved_keys_file)
    store = KafkaKeyStore(bootstrap, settings.data_dir / "keys.snapshot.json", who=f"gateway {settings.gateway_id}")
    store.start(settings.keys_start_wait_s)
    return store


def run_gateway(settings: Settings, config: GatewayConfig, bootstrap: str) -> None:
    """Serve until SIGTERM/SIGINT, then flush the publisher; undelivered events go to the spool."""
    # The gateway serves (and journals) before Kafka answers.
    ensure_topics_in_background(bootstrap, "gateway", partitions=settings.topic_partitions,
                                replication_factor=settings.topic_replication_factor)
    spool_dir = settings.resolved_spool_dir
    publisher = KafkaPublisher(
        bootstrap, spool_dir / f"{settings.gateway_id}.jsonl", source=f"/aimeter/gateway/{settings.gateway_id}",
        counts_path=settings.data_dir / "counts" / f"{settings.gateway_id}.json",
        journal_dir=spool_dir / f"{settings.gateway_id}.journal", journal_segment_bytes=settings.journal_segment_bytes,
        delivery_timeout_s=settings.kafka_delivery_timeout_s, spool_max_bytes=settings.spool_max_bytes,
        fail_closed=settings.spool_full_policy == "closed", gateway_id=settings.gateway_id)
    publisher.start()
    keys = _key_store(settings, bootstrap)
    app = Gateway(config, publisher, gateway_id=settings.gateway_id, max_body_bytes=settings.max_body_bytes,
                  upstream_timeout_s=settings.upstream_timeout_s, keys=keys,
                  upstream_max_body_bytes=settings.upstream_max_body_bytes,
                  max_concurrent_per_key=settings.max_concurrent_per_key,
                  metrics_token=ensure_token(settings.resolved_metrics_token_file), tracer=_tracer(settings, config),
                  budgets=gate_for(config, bootstrap, clickhouse_url=settings.resolved_clickhouse_url,
                                   query_port=settings.query_port, keys=keys))
    auth = describe(keys) if keys else "NONE (auth=none: team from X-Aimeter-Team)"
    print(f"gateway: listening on http://{settings.gateway_host}:{settings.gateway_port}; auth: {auth}", flush=True)
    # The server restores this handler once it stops; with the default SIGTERM action a second signal would kill
    # us before the publisher is flushed and undelivered events are spooled. Ignore it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        limits = Limits(settings.gateway_head_timeout_s, settings.gateway_body_timeout_s,
                        settings.gateway_max_connections_per_peer)
        server = Server(app, settings.gateway_host, settings.gateway_port, keep_alive_s=30.0,
                        on_started=_tune_gc, limits=limits)
        try:
            uvloop.run(server.serve())
        except StartupError as exc:
            print(f"gateway: startup failed: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(3) from None
    finally:
        if isinstance(keys, KafkaKeyStore):
            keys.close()
        publisher.close()
        stats = publisher.stats
        print(f"gateway: stopped; events emitted={stats.emitted} journaled={publisher.journal.appended} "
              f"unjournaled={publisher.journal.unjournaled} spooled={stats.spooled} replayed={stats.replayed} "
              f"held={stats.held} dropped={stats.dropped}", flush=True)
