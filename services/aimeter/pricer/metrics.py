"""The pricer's Prometheus metrics, served on their own loopback port (``AIMETER_PRICER_METRICS_PORT``).

Why a port of its own rather than the embedded query endpoint: that endpoint exists only in embedded
mode, and its credential reads the whole ledger; a scraper needs neither. Why not a textfile for
node_exporter: it needs a node_exporter beside every pricer and a writer on a timer. So a small
``http.server`` on 127.0.0.1 in a daemon thread, ``GET /metrics`` only, behind the same bearer token as
the gateway's ``/metrics`` (``metrics_auth.py``), refusing browsers and foreign ``Host`` names. If the port
is taken, the pricer logs one line and prices on without it: metrics never stop the ledger.

Updates are per batch (thousands of events), so ``prometheus_client``'s own locked metrics cost nothing
that matters here. USD is the pricer's priced amount as a float, for rates and dashboards only; the exact
Decimal amounts are in ClickHouse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from aimeter.gateway.metrics import Bounded
from aimeter.metrics_auth import MetricsDenied, check_scrape
from aimeter.store.query_auth import allowed_hosts

log = logging.getLogger(__name__)
UNITS_PER_USD = 10**12  # the pricer's integer money units (pricer/unitmath.py)
BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PricerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.lag = Gauge("aimeter_pricer_consumer_lag_messages", "Messages in the assigned partitions not yet "
                         "consumed (high watermark minus position), summed; -1 before the first fetch.",
                         registry=reg)
        self.lag.set(-1)
        self.batch_events = Histogram("aimeter_pricer_batch_events", "Messages per consumed batch.",
                                      buckets=BATCH_BUCKETS, registry=reg)
        self.insert_seconds = Histogram("aimeter_pricer_insert_seconds", "Time to insert one priced batch into "
                                        "ClickHouse (both tables).", buckets=INSERT_BUCKETS, registry=reg)
        self.inserted = Counter("aimeter_pricer_events_inserted", "Usage events inserted into ClickHouse (a "
                                "redelivered batch counts again; the table deduplicates).", registry=reg)
        self.failures = Counter("aimeter_pricer_batch_failures", "Batches whose write failed and were redelivered "
                                "after a backoff.", registry=reg)
        self.dead_lettered = Counter("aimeter_pricer_dead_lettered", "Poison messages confirmed on the dead-letter "
                                     "topic.", registry=reg)
        self.not_priced = Counter("aimeter_pricer_not_priced", "Rows stored with cost NULL: status=unpriced (no "
                                  "price for the model) or unmetered (no usage could be read).", ["status"],
                                  registry=reg)
        self.cost = Counter("aimeter_pricer_cost_usd", "Priced USD by team and model (float, for rates; the exact "
                            "amounts are in ClickHouse).", ["team", "model"], registry=reg)
        self.team, self.model = Bounded(), Bounded()

    def batch(self, size: int) -> None:
        self.batch_events.observe(size)

    def priced(self, events: Iterable[Any], charges: Iterable[Any]) -> None:
        """Per batch: USD by team and model, and the rows left without a cost."""
        sums: dict[tuple[str, str], int] = {}
        missing: dict[str, int] = {}
        for event, (amounts, _reference, outcome) in zip(events, charges, strict=True):
            if amounts and amounts[0] is not None:
                key = (self.team(event.attribution.team), self.model(event.model_served or event.model_requested))
                sums[key] = sums.get(key, 0) + sum(amounts)
            else:
                missing[outcome.status] = missing.get(outcome.status, 0) + 1
        for (team, model), units in sums.items():
            self.cost.labels(team, model).inc(units / UNITS_PER_USD)
        for status, count in missing.items():
            self.not_priced.labels(status).inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def serve_metrics(metrics: PricerMetrics, port: int, token: str, host: str = "127.0.0.1") -> ThreadingHTTPServer | None:
    """Start the loopback metrics server in a daemon thread; None (one log line) when the port is taken."""
    hosts = allowed_hosts(host, port)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, kind = 200, b"", "text/plain; version=0.0.4; charset=utf-8"
            try:
                if headers.get("host", "").lower() not in hosts:
                    raise MetricsDenied(403, "Host is not this endpoint")
                check_scrape(headers, token)
                if self.path.split("?")[0] != "/metrics":
                    raise MetricsDenied(404, "only /metrics is served here")
                body = metrics.exposition()
            except MetricsDenied as exc:
                status, body, kind = exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # a scrape every 15 s is not worth a log line

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        log.error("pricer metrics: cannot listen on %s:%d (%s); pricing goes on without /metrics", host, port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="pricer-metrics", daemon=True).start()
    return server
