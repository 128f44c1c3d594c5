"""The gateway's Prometheus metrics: plain counters on the request path, metric families built at scrape.

``prometheus_client``'s own ``Counter.labels(...).inc()`` costs about a microsecond per call (a lock and
a label lookup each time), and a request updates seven series. Here a request adds to plain dicts keyed by
label tuples and to bucket lists (``bisect`` picks the bucket), on the event loop's thread only; the
collector turns them into metric families when ``/metrics`` is scraped, on that same thread, so there is
no lock. ``benchmarks/metrics_micro.py`` measures the per-request cost (the target is at most 3 µs).

Label values are bounded: the API, status and backend come from code and config; teams and models are
kept as the first ``MAX_VALUES`` distinct values seen and every later one is counted under ``other``
(with ``auth=none`` the team is whatever header a client sends, so it must not grow a series each).

USD is not here: the gateway holds no price book (pricing a request would cost tens of microseconds on the
request path). Tokens are counted by team and model here; the pricer's ``aimeter_pricer_cost_usd_total``
has the priced USD by team and model, and ClickHouse holds the exact amounts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

MAX_VALUES = 200  # distinct teams (and models) with their own series; the rest are counted as OTHER
OTHER = "other"
# Seconds. Added latency is sub-millisecond when healthy; upstream latency runs to minutes for long generations.
ADDED_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# The publisher's counters (KafkaPublisher.metrics()): help text; a name ending in _total is a counter.
PUBLISHER_HELP = {
    "aimeter_events_emitted_total": "Usage events handed to the publisher (one per upstream attempt).",
    "aimeter_events_journaled_total": "Usage events written to the local journal before the answer's last byte.",
    "aimeter_events_unjournaled_total": "Usage events that found no room in the journal (disk full): memory only.",
    "aimeter_events_spooled_total": "Usage events Kafka refused or timed out, written to the on-disk spool.",
    "aimeter_events_replayed_total": "Usage events re-published from the spool or a previous process's journal.",
    "aimeter_events_held_in_memory_total": "Refused events the spool could not take, handed back to librdkafka.",
    "aimeter_events_dropped_total": "Usage events given up: neither the spool nor librdkafka's queue took them.",
    "aimeter_spool_bytes": "Bytes waiting in the spool for Kafka.",
    "aimeter_journal_bytes": "Bytes of journal segments not yet settled (delivered or spooled).",
    "aimeter_journal_full": "1 while the journal has no room for the next event.",
    "aimeter_spool_failing": "1 while refused events cannot be spooled.",
    "aimeter_kafka_down": "1 while the Kafka cluster does not answer.",
    "aimeter_producer_queue_length": "Messages and requests in librdkafka's queue (events not yet acknowledged).",
}


class Bounded:
    """Maps label values to themselves for the first ``limit`` distinct ones, to OTHER after that."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int = MAX_VALUES, known: tuple[str, ...] = ()) -> None:
        self.limit = limit
        self.seen: dict[str, str] = {value: value for value in known[:limit]}

    def __call__(self, value: str) -> str:
        label = self.seen.get(value)
        if label is not None:
            return label
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen[value] = value
        return value


class Histogram:
    """Non-cumulative bucket counts (the last one is +Inf) and the sum; made cumulative at scrape."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def buckets(self) -> list[tuple[str, float]]:
        running, out = 0, list[tuple[str, float]]()
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Timing:
    """The four latency histograms of one (api, backend)."""

    __slots__ = ("added", "ttft_added", "ttft_upstream", "upstream")

    def __init__(self) -> None:
        self.upstream, self.added = Histogram(UPSTREAM_BUCKETS), Histogram(ADDED_BUCKETS)
        self.ttft_upstream, self.ttft_added = Histogram(UPSTREAM_BUCKETS), Histogram(ADDED_BUCKETS)


class GatewayMeter:
    """Per-request counters of one gateway process, and the collector that exposes them.

    Models need no bound here: a request is counted only once its model routed, so it is a configured one.
    """

    def __init__(self, teams: tuple[str, ...] = ()) -> None:
        self.team = Bounded(known=teams)
        # (api, model, status, team) -> [requests, input tokens, output tokens, cache-read tokens]
        self.requests: dict[tuple[str, str, str, str], list[int]] = {}
        self.rejected: dict[tuple[str, str], int] = {}  # (api, http status): answered by the gateway itself
        self.timing: dict[tuple[str, str], Timing] = {}  # (api, backend)

    def request(self, api: str, backend: str, model: str, team: str, status: str, total_s: float,  # noqa: PLR0917
                upstream_s: float, ttft_s: float | None, input_tokens: int, output_tokens: int,
                cache_read_tokens: int) -> None:
        """One proxied request: two dict lookups, list arithmetic and ``bisect``; positional arguments because
        this runs on every request and keywords cost more."""
        label = self.team.seen.get(team)
        if label is None:
            label = self.team(team)
        key = (api, model, status, label)
        counts = self.requests.get(key)
        if counts is None:
            counts = self.requests[key] = [0, 0, 0, 0]
        counts[0] += 1
        counts[1] += input_tokens
        counts[2] += output_tokens
        counts[3] += cache_read_tokens
        timing = self.timing.get((api, backend))
        if timing is None:
            timing = self.timing[api, backend] = Timing()
        added_s = total_s - upstream_s
        if added_s < 0:
            added_s = 0.0
        h = timing.upstream
        h.counts[bisect_left(UPSTREAM_BUCKETS, upstream_s)] += 1
        h.total += upstream_s
        h = timing.added
        h.counts[bisect_left(ADDED_BUCKETS, added_s)] += 1
        h.total += added_s
        if ttft_s is not None:  # the gateway's share of it all comes before the upstream is called
            ttft_s = ttft_s - added_s if ttft_s > added_s else 0.0
            h = timing.ttft_upstream
            h.counts[bisect_left(UPSTREAM_BUCKETS, ttft_s)] += 1
            h.total += ttft_s
            h = timing.ttft_added
            h.counts[bisect_left(ADDED_BUCKETS, added_s)] += 1
            h.total += added_s

    def reject(self, api: str, http_status: int) -> None:
        key = (api, str(http_status))
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("aimeter_gateway_requests", "Requests forwarded upstream, by outcome.",
                                       labels=["api", "model", "status", "team"])
        by_team: dict[tuple[str, str], list[int]] = {}
        for (api, model, status, team), counts in list(self.requests.items()):
            requests.add_metric([api, model, status, team], counts[0])
            summed = by_team.setdefault((team, model), [0, 0, 0])
            for i in range(3):
                summed[i] += counts[i + 1]
        yield requests
        rejected = CounterMetricFamily("aimeter_gateway_rejected", "Requests answered by the gateway itself with "
                                       "an error (bad key, unknown model, limits), never forwarded.",
                                       labels=["api", "code"])
        for labels, value in list(self.rejected.items()):
            rejected.add_metric(labels, value)
        yield rejected
        tokens = CounterMetricFamily("aimeter_gateway_tokens", "Tokens the gateway metered (input includes cache "
                                     "reads; cache_read is a subset of input). The gateway has no prices: USD "
                                     "is the pricer's aimeter_pricer_cost_usd_total.", labels=["team", "model", "type"])
        for (team, model), summed in by_team.items():
            for kind, value in zip(("input", "output", "cache_read"), summed, strict=True):
                tokens.add_metric([team, model, kind], value)
        yield tokens
        timing = list(self.timing.items())
        yield _histogram("aimeter_gateway_latency_seconds", "Request duration: part=upstream is the time in the "
                         "upstream call (including relaying the answer), part=added the gateway's own (auth, "
                         "parsing, routing, journaling the event).",
                         [(k, "upstream", t.upstream) for k, t in timing] + [(k, "added", t.added) for k, t in timing])
        yield _histogram("aimeter_gateway_ttft_seconds", "Time to first token of streamed answers: part=upstream "
                         "from calling the upstream, part=added the gateway's share.",
                         [(k, "upstream", t.ttft_upstream) for k, t in timing if sum(t.ttft_upstream.counts)]
                         + [(k, "added", t.ttft_added) for k, t in timing if sum(t.ttft_added.counts)])


def _histogram(name: str, help_text: str, series: list[tuple[tuple[str, str], str, Histogram]]) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=["api", "backend", "part"])
    for (api, backend), part, histogram in series:
        family.add_metric([api, backend, part], histogram.buckets(), histogram.total)
    return family


class PublisherCollector:
    """The publisher's own counters (read, never reset), with HELP and TYPE lines."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        for name, value in self.read().items():
            help_text = PUBLISHER_HELP.get(name, "Publisher state.")
            if name.endswith("_total"):
                yield CounterMetricFamily(name[:-6], help_text, value=value)
            else:
                yield GaugeMetricFamily(name, help_text, value=value)


def registry_for(meter: GatewayMeter, publisher: Callable[[], dict[str, float]] | None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(meter)
    if publisher is not None:
        registry.register(PublisherCollector(publisher))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4), what Prometheus and Grafana's agents scrape."""
    return generate_latest(registry)

