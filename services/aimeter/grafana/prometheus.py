"""The "Gateway health" dashboard: the gateway's and the pricer's own /metrics, on a Prometheus datasource (pure).

The three other dashboards read the ledger in ClickHouse, so they see a request once it is priced; this one
sees the processes themselves (requests the gateway refused, its added latency, the journal and spool, the
pricer's lag and dead letters), including while Kafka or ClickHouse is down. Every panel names the datasource
uid :data:`PROM_UID`, which Grafana must have (see the README's "Gateway health" section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

from aimeter.grafana.model import Dashboard, Json

PROM_UID = "aimeter-prometheus"
PROM = {"type": "prometheus", "uid": PROM_UID}
RATE = "[$__rate_interval]"
RED_WHEN_ANY = {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}


@dataclass(frozen=True)
class PromPanel:
    """A panel of PromQL queries, each ``(expr, legend)``; lays out like :class:`model.Panel`."""

    kind: str
    title: str
    queries: tuple[tuple[str, str], ...]
    description: str
    width: int = 8
    height: int = 8
    fields: Json = field(default_factory=dict)
    options: Json = field(default_factory=dict)

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        instant = self.kind == "stat"
        targets = [{"refId": chr(ord("A") + i), "datasource": PROM, "expr": expr, "legendFormat": legend,
                    "range": not instant, "instant": instant} for i, (expr, legend) in enumerate(self.queries)]
        return {"id": panel_id, "type": self.kind, "title": self.title, "description": self.description,
                "datasource": PROM, "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
                "targets": targets, "fieldConfig": {"defaults": self.fields, "overrides": []},
                "options": self.options}


def quantiles(metric: str, where: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> tuple[
        tuple[str, str], ...]:
    group = f"le{', ' + by if by else ''}"
    label = f" {{{{{by}}}}}" if by else ""
    return tuple((f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{where}}}{RATE})))",
                  f"p{round(q * 100)}{label}") for q in qs)


def series(title: str, queries: tuple[tuple[str, str], ...], unit: str, text: str, width: int = 8) -> PromPanel:
    return PromPanel("timeseries", title, queries, text, width=width, fields={"unit": unit})


def alarm(title: str, expr: str, text: str) -> PromPanel:
    return PromPanel("stat", title, ((expr, title),), text, width=4, height=4,
                     fields={"thresholds": RED_WHEN_ANY, "color": {"mode": "thresholds"}, "unit": "short"},
                     options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False},
                              "colorMode": "background", "graphMode": "none", "textMode": "value"})


def prometheus_datasource(url: str) -> Json:
    """The datasource the Gateway health dashboard names, for ``aimeter grafana push --prometheus-url``."""
    parsed = urlparse(url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError(f"--prometheus-url must be http(s)://host:port as Grafana reaches Prometheus, got {url!r}")
    return {"name": "ai-meter Prometheus", "uid": PROM_UID, "type": "prometheus", "access": "proxy",
            "url": url.rstrip("/"), "jsonData": {"httpMethod": "POST"}}


def gateway_health() -> Dashboard:
    requests = "aimeter_gateway_requests_total"
    shown = [
        alarm("Events dropped", "sum(increase(aimeter_events_dropped_total[$__range])) or vector(0)",
              "Usage events given up in the range (neither the spool nor librdkafka's queue took them): must be 0."),
        alarm("Unjournaled", "sum(increase(aimeter_events_unjournaled_total[$__range])) or vector(0)",
              "Events that found no room in the journal (disk full) in the range: kept in memory only."),
        alarm("Kafka down", "max(aimeter_kafka_down) or vector(0)", "1 while a gateway's Kafka does not answer."),
        alarm("Journal full", "max(aimeter_journal_full) or vector(0)",
              "1 while a gateway's journal has no room for the next event."),
        alarm("Dead letters", "sum(increase(aimeter_pricer_dead_lettered_total[$__range])) or vector(0)",
              "Messages the pricer could not read, sent to the dead-letter topic in the range."),
        alarm("Not priced", "sum(increase(aimeter_pricer_not_priced_total[$__range])) or vector(0)",
              "Rows stored unpriced or unmetered (cost NULL) in the range: add a price, or find the lost usage."),
        series("Requests/s by status", ((f"sum by (status) (rate({requests}{RATE}))", "{{status}}"),), "reqps",
               "Requests forwarded upstream, by outcome (ok, upstream_error, timeout, client_cancelled, ...)."),
        series("Refused by the gateway /s", (("sum by (code) (rate(aimeter_gateway_rejected_total"
                                             f"{RATE}))", "{{code}}"),), "reqps",
               "Answered by the gateway itself, never forwarded: 401 keys, 404 models, 413 bodies, 429 limits."),
        series("Added latency (gateway's own)", quantiles("aimeter_gateway_latency_seconds", 'part="added"'), "s",
               "Time the gateway adds to a request: auth, parsing, routing and journaling the event."),
        series("Upstream latency by API", quantiles("aimeter_gateway_latency_seconds", 'part="upstream"', "api",
                                                    (0.5, 0.95)), "s",
               "Time in the upstream call, relaying the answer included."),
        series("Time to first token", (*quantiles("aimeter_gateway_ttft_seconds", 'part="upstream"', "", (0.5, 0.95)),
                                       *(("histogram_quantile(0.95, sum by (le) (rate(aimeter_gateway_ttft_seconds_"
                                          f'bucket{{part="added"}}{RATE})))', "p95 added"),)), "s",
               "Streams: from calling the upstream to its first byte, and the gateway's share before it."),
        series("Tokens/s by team", (("sum by (team) (rate(aimeter_gateway_tokens_total{type!=\"cache_read\"}"
                                     f"{RATE}))", "{{team}}"),), "short",
               "Input plus output tokens the gateway metered. Teams beyond the first 200 are 'other'."),
        series("Spend per hour by team (pricer)", (("sum by (team) (rate(aimeter_pricer_cost_usd_total"
                                                    f"{RATE})) * 3600", "{{team}}"),), "currencyUSD",
               "USD per hour as the pricer prices it (marginal; GPU idle time is in the ClickHouse dashboards). "
               "The gateway has no prices: USD comes from the pricer."),
        series("Usage events /s", tuple((f"sum(rate(aimeter_events_{name}_total{RATE}))", name) for name in (
            "emitted", "spooled", "replayed", "held_in_memory", "dropped")), "short",
               "The gateway's publisher: emitted to Kafka, spooled when Kafka refused, replayed from the spool or "
               "journal, held in memory when the spool could not take them, dropped."),
        series("Journal and spool", (("sum(aimeter_journal_bytes)", "journal"), ("sum(aimeter_spool_bytes)", "spool"),
                                     ("sum(aimeter_producer_queue_length)", "producer queue (messages)")), "bytes",
               "Journal segments not yet settled, spool waiting for Kafka, and librdkafka's queue (a count)."),
        series("Pricer consumer lag", (("sum(aimeter_pricer_consumer_lag_messages)", "messages"),), "short",
               "Usage events in Kafka the pricer has not consumed yet (-1 before its first fetch)."),
        series("Pricer batches", (*quantiles("aimeter_pricer_batch_events", "", "", (0.5,)),
                                  (f"sum(rate(aimeter_pricer_events_inserted_total{RATE}))", "inserted/s")), "short",
               "Events per consumed batch (median) and events inserted per second."),
        series("Pricer insert time", quantiles("aimeter_pricer_insert_seconds", "", "", (0.5, 0.99)), "s",
               "Time to insert one priced batch into ClickHouse."),
        series("Pricer failures", ((f"sum(rate(aimeter_pricer_batch_failures_total{RATE}))", "batch retries/s"),
                                   (f"sum by (status) (rate(aimeter_pricer_not_priced_total{RATE}))", "{{status}}/s")),
               "short", "Batches whose write failed (redelivered after a backoff), and rows stored without a cost."),
    ]
    return Dashboard("aimeter-gateway-health", "Gateway health",
                     "The gateway's and the pricer's own metrics (/metrics, scraped by Prometheus): traffic, refusals, "
                     "added latency, journal and spool, pricer lag and dead letters.",
                     shown, [], time_from="now-3h")
