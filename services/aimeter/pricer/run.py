"""Runs the pricer process: migrate, subscribe, and (embedded mode) serve read-only queries."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from http.server import ThreadingHTTPServer

from clickhouse_connect.driver.client import Client
from faststream.confluent import KafkaBroker

from aimeter.config import GatewayConfig
from aimeter.kafka_admin import ensure_topics_in_background
from aimeter.metrics_auth import ensure_token
from aimeter.pricer.batch_writer import BatchWriter, DeadLetters
from aimeter.pricer.consumer import pricer_consumer
from aimeter.pricer.gateway_counts import clickhouse_insert, counts_broker
from aimeter.pricer.gpu_periods import history_config, read_history, sync_gpu_periods
from aimeter.pricer.metrics import PricerMetrics, serve_metrics
from aimeter.pricer.overrides_load import load_price_book
from aimeter.pricer.pricebook import PriceBook
from aimeter.settings import Settings
from aimeter.store.client import chdb_path, get_client, redact
from aimeter.store.migrations import migrate

log = logging.getLogger(__name__)


def gpu_history_book(client: Client, config: GatewayConfig, book: PriceBook) -> PriceBook:
    """Sync the GPU cost history from the config (logging first declarations, price changes and pending
    corrections), then price self-hosted requests by that stored history rather than the config's latest
    word: an undated price edit applies from its sync on, a retroactive one only after `aimeter reprice`."""
    written = sync_gpu_periods(client, config)
    if written:
        log.info("wrote %d GPU cost period rows from the config", written)
    return PriceBook(history_config(config, read_history(client)), book.overrides)


def _serve_metrics(settings: Settings, metrics: PricerMetrics) -> ThreadingHTTPServer | None:
    if not settings.pricer_metrics_port:
        return None
    token_path = settings.resolved_metrics_token_file
    server = serve_metrics(metrics, settings.pricer_metrics_port, ensure_token(token_path))
    if server is not None:
        print(f"pricer: metrics on http://127.0.0.1:{settings.pricer_metrics_port}/metrics (bearer token in "
              f"{token_path})", flush=True)
    return server


def _stop(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


async def keep_rollups(url: str, interval_s: float, retention_days: int) -> None:
    """The rollup job (aimeter.reports.rollup) every ``interval_s``, on a thread and a client of its own, off the
    consumer's insert path (a client serialises its queries: a job would hold back the inserts). A failure is
    logged and retried next time: until then reports read those hours' raw rows (still exact)."""
    from aimeter.reports import rollup  # noqa: PLC0415

    client = get_client(url)
    if retention_days:
        await asyncio.to_thread(rollup.apply_retention, client, retention_days)
    while interval_s > 0:
        await asyncio.sleep(interval_s)
        try:
            done = await asyncio.to_thread(rollup.refresh, client, retention_days=retention_days)
        except Exception:
            log.exception("rollup refresh failed; reports read raw rows for the dirty hours until the next one")
            continue
        if done.computed:
            log.info("rollups: %d hours recomputed (version %d)", done.computed, done.version)


async def start_counts(broker: KafkaBroker) -> None:
    """Start the gateway-counts consumer (pricer/gateway_counts.py) once it can, retrying: Kafka may come later."""
    delay = 1.0
    while True:
        try:
            await broker.start()
        except Exception as exc:  # noqa: BLE001 - retried; reconcile's counts wait meanwhile
            log.warning("gateway counts consumer: cannot start (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)
        else:
            return


async def run_pricer(settings: Settings, config: GatewayConfig, bootstrap: str) -> None:  # noqa: PLR0915
    """Until SIGTERM/SIGINT. In embedded mode this process owns chDB, so it also answers queries."""
    book = load_price_book(config)  # an invalid overrides file stops the pricer here, every problem listed
    url = settings.resolved_clickhouse_url
    client = get_client(url)
    applied = migrate(client, cluster=settings.clickhouse_cluster)
    if applied:
        log.info("applied ClickHouse migrations: %s", ", ".join(applied))
    book = gpu_history_book(client, config, book)
    # The budget-use panel reads the budgets' windows from ClickHouse; in embedded mode only this process may
    # write there, so it syncs the config's at once, as it does the GPU cost history, and the key store's
    # (`aimeter budgets set --key`) as they come and go (keep_budget_windows, below).
    from aimeter.alerts.budget_table import (  # noqa: PLC0415
        config_budgets,
        keep_budget_windows,
        key_store_for,
        sync_budget_windows,
    )

    fixed_budgets = config_budgets(config)
    sync_budget_windows(client, fixed_budgets)
    # Kafka may come later: the pricer waits, serving queries.
    ensure_topics_in_background(bootstrap, "pricer", partitions=settings.topic_partitions,
                                replication_factor=settings.topic_replication_factor)
    print(f"pricer: prices from {book.version}", flush=True)
    dead_letters = DeadLetters(bootstrap)
    metrics = PricerMetrics()
    writer = BatchWriter(client, book, dead_letters.send, settings.fault_insert_fail_file, metrics=metrics)
    consumer = pricer_consumer(bootstrap, settings.pricer_group, writer.write, settings.pricer_batch_max, metrics)
    metrics_server = _serve_metrics(settings, metrics)
    consumer.subscribe()
    # The price book, config and migrations are long-lived: moving them out of the collector's view makes
    # every later collection of the per-batch garbage cheaper (measured ~25% of build_batch).
    gc.freeze()
    # A batch's garbage is acyclic (reference counts free it; gc.collect() found none after 100,000 events), yet
    # the container objects a batch holds until it is written set off a young collection every ~150 events and
    # a full one every few batches: 0.3 µs per event in the collector (gc.callbacks, 20,000-event batches).
    # With this threshold no collection ran in 100,000 events.
    gc.set_threshold(100_000, 50, 1000)
    query_runner = None
    path = chdb_path(url)
    if path is not None:
        from aimeter.store.query_auth import READER_USER, password_file_for  # noqa: PLC0415
        from aimeter.store.query_request import ServerLimits  # noqa: PLC0415
        from aimeter.store.query_server import serve_queries  # noqa: PLC0415 - only embedded mode needs it

        limits = ServerLimits(settings.query_max_execution_s, settings.query_max_memory_bytes,
                              settings.query_max_result_bytes)
        query_runner = await serve_queries(str(path), "127.0.0.1", settings.query_port, limits=limits,
                                           max_concurrent=settings.query_max_concurrent)
        print(f"pricer: read-only ClickHouse HTTP endpoint on http://127.0.0.1:{settings.query_port} "
              f"(user {READER_USER}, password in {password_file_for(path)})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The loop blocks in librdkafka and in ClickHouse inserts: its own thread, off the query server's event loop.
    consuming = asyncio.ensure_future(asyncio.to_thread(consumer.run))
    rolling = asyncio.ensure_future(keep_rollups(url, settings.rollup_interval_s, settings.raw_retention_days))
    budget_keys = key_store_for(settings, bootstrap, "pricer")
    windows = asyncio.ensure_future(keep_budget_windows(url, fixed_budgets, budget_keys,
                                                        wait_s=settings.keys_start_wait_s))
    counts = counts_broker(bootstrap, f"{settings.pricer_group}-counts", clickhouse_insert(url))
    counting = asyncio.ensure_future(start_counts(counts))
    print(f"pricer: consuming from {bootstrap} into {redact(url)}", flush=True)  # never the password
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({consuming, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        consumer.stop()
        stopping.cancel()
        rolling.cancel()
        windows.cancel()
        counting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        with contextlib.suppress(asyncio.CancelledError):
            await counting
        with contextlib.suppress(asyncio.CancelledError):
            await windows  # stops the keys reader
        await counts.stop()
        try:
            await consuming  # a fatal Kafka error surfaces here and ends the process non-zero
        finally:
            dead_letters.close()
            _stop(metrics_server)
            if query_runner is not None:
                await query_runner.cleanup()
            log.info("pricer stopped after inserting %d events", writer.inserted)
