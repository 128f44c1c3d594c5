"""The metering pipeline's own numbers: pricer ingest rate (Kafka -> ClickHouse) and freshness.

Ingest rate: N valid UsageEvents are produced into the topic first; then a fresh pricer
(new consumer group, empty chDB) is started on the SUT core and its ClickHouse row count is
polled through its read-only query endpoint. The rate is counted from the first visible batch
to the last row, so process start and group join are reported apart, not averaged in.

Freshness: requests through the gateway, each answer's ``x-aimeter-event-id`` is polled in
ClickHouse until its priced row is visible; freshness = visible - end of the client's response.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from aimeter.events import (
    USAGE_TOPIC,
    Attribution,
    Deployment,
    Status,
    TokenUsage,
    UsageEvent,
    UsageSource,
    cloudevent_headers,
)
from aimeter.events.ids import new_event_id
from aimeter.gateway.publisher import encode_event
from aimeter.local.kafka import free_port
from aimeter.store.query_auth import PASSWORD_FILE_NAME, READER_USER, read_password
from benchmarks import httpload
from benchmarks.procs import SUT_CORE, Background, Procs, cpu_seconds, wait_http
from benchmarks.suts import MODEL

PRELOAD_TEAM = "bench-preload"
FRESH_TEAM = "bench-fresh"
POLL_S = 0.05


def ch_query(port: int, data_dir: Path, sql: str, timeout: float = 10.0) -> str:
    """One read through the pricer's ClickHouse HTTP endpoint, as its reader; returns the TSV text."""
    url = f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode({"query": sql})
    password = read_password(data_dir / PASSWORD_FILE_NAME)
    request = urllib.request.Request(url, headers={"X-ClickHouse-User": READER_USER, "X-ClickHouse-Key": password})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return resp.read().decode()


# A mix of providers and models, so the ingest rate is not the best case of one cached price card.
PRELOAD_MODELS = (
    ("openai.chat", "openai", "openai", MODEL, f"{MODEL}-2024-07-18"),
    ("openai.chat", "openai", "openai", "gpt-4o", "gpt-4o-2024-08-06"),
    ("anthropic.messages", "anthropic", "anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("gemini.generate_content", "gemini", "google", "gemini-2.5-flash", "gemini-2.5-flash"),
)


def _template(i: int) -> bytes:
    """A valid event as the gateway would encode it; ids are swapped per message below."""
    now = datetime.now(UTC)
    api, backend, provider, model, served = PRELOAD_MODELS[i % len(PRELOAD_MODELS)]
    event = UsageEvent(
        event_id=new_event_id(), gateway_id="bench-preload", started_at=now, first_token_at=None, ended_at=now,
        api=api, backend=backend, provider=provider, deployment=Deployment.PROPRIETARY,
        model_requested=model, model_served=served, stream=bool(i % 2), status=Status.OK,
        http_status=200, usage_source=UsageSource.REPORTED,
        usage=TokenUsage(input_tokens=1200 + i, cache_read_input_tokens=200, output_tokens=300 + i),
        attribution=Attribution(team=f"{PRELOAD_TEAM}-{i}", project="load", api_key_id=f"benchkey{i:02d}"),
    )
    return encode_event(event)


def preload(bootstrap: str, count: int) -> float:
    """Produce ``count`` distinct valid events with CloudEvents headers; returns the seconds it took."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.messages": 500_000, "batch.num.messages": 10_000})
    templates = [_template(i) for i in range(16)]
    stamp = datetime.now(UTC).isoformat()
    start = time.perf_counter()
    for n in range(count):
        raw = templates[n % len(templates)]
        old_id = raw[raw.index(b'"event_id":"') + 12:][:36]
        event_id = str(new_event_id())
        payload = raw.replace(old_id, event_id.encode())
        while True:
            try:
                producer.produce(USAGE_TOPIC, payload, key=event_id.encode(),
                                 headers=cloudevent_headers(event_id, "/aimeter/bench/preload", stamp))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"preload: {len(producer)} events still undelivered after 120 s")
    return time.perf_counter() - start


def topic_size(bootstrap: str) -> int:
    """Messages currently in the usage topic (what a fresh group reading from earliest must ingest)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-sizer", "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(USAGE_TOPIC, timeout=10).topics[USAGE_TOPIC].partitions
        total = 0
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(USAGE_TOPIC, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _group_offsets(bootstrap: str, group: str) -> tuple[Consumer, list[TopicPartition], list[int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    parts = consumer.list_topics(USAGE_TOPIC, timeout=10).topics[USAGE_TOPIC].partitions
    tps = [TopicPartition(USAGE_TOPIC, p) for p in sorted(parts)]
    highs = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
    return consumer, tps, highs


def commit_to_end(bootstrap: str, group: str) -> None:
    """Start ``group`` at the topic's end, so the proxy runs' pricer skips the preloaded backlog."""
    consumer, tps, highs = _group_offsets(bootstrap, group)
    try:
        consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, h) for tp, h in zip(tps, highs, strict=True)],
                        asynchronous=False)
    finally:
        consumer.close()


def wait_caught_up(bootstrap: str, group: str, timeout: float) -> float:
    """Block until ``group`` has committed up to the end of the topic; returns the seconds waited.

    Runs after each gateway phase, so the pricer's catch-up work never lands in another target's run.
    """
    start = time.monotonic()
    consumer, tps, highs = _group_offsets(bootstrap, group)
    try:
        while time.monotonic() - start < timeout:
            committed = consumer.committed(tps, timeout=10)
            if all(c.offset >= h for c, h in zip(committed, highs, strict=True)):
                break
            time.sleep(0.25)
    finally:
        consumer.close()
    return round(time.monotonic() - start, 2)


def pricer_rate(procs: Procs, env: dict[str, str], work: Path, expected: int, timeout: float) -> dict[str, Any]:
    """One fresh pricer on the SUT core ingests the whole topic; poll its row count until all are in."""
    port = free_port()
    fresh = uuid.uuid4().hex[:12]  # a new chDB directory and consumer group for every repetition
    data = work / f"pricer-rate-{fresh}"
    child_env = {**env, "AIMETER_DATA_DIR": str(data), "AIMETER_QUERY_PORT": str(port),
                 "AIMETER_PRICER_GROUP": f"bench-rate-{fresh}"}
    started = time.perf_counter()
    proc = procs.spawn(f"pricer-rate-{data.name}", [sys.executable, "-m", "aimeter", "pricer"], SUT_CORE,
                       env=child_env)
    try:
        wait_http(proc, f"http://127.0.0.1:{port}/ping", timeout=120)
        ready, background, cpu_ready = time.perf_counter(), Background(), cpu_seconds(proc.pids())
        samples = wait_committed(env["AIMETER_KAFKA_BOOTSTRAP"], child_env["AIMETER_PRICER_GROUP"], expected, timeout)
        others = background.cores()
        cpu_used = cpu_seconds(proc.pids()) - cpu_ready
        rows = int(ch_query(port, data, "SELECT count() FROM usage_costs").strip() or 0)  # what the commits claim
    finally:
        procs.stop(proc)
    (t_first, n_first), (t_last, _) = samples[0], samples[-1]
    n_last = min(rows, samples[-1][1])
    if t_last > t_first:
        rate = (n_last - n_first) / (t_last - t_first)
    else:  # everything landed in one batch (tiny smoke counts): count from readiness instead
        rate = n_last / (t_last - ready) if t_last > ready else 0.0
    return {"events": expected, "ingested": n_last, "events_per_s": round(rate, 1),
            "first_batch_after_ready_s": round(t_first - ready, 3), "start_to_ready_s": round(ready - started, 3),
            "wall_from_ready_s": round(t_last - ready, 3), "complete": n_last >= expected, "background_cores": others,
            # The pricer's own CPU (all threads: chDB's insert and merge threads too) per event ingested.
            "cpu_us_per_event": round(cpu_used * 1e6 / n_last, 1) if n_last else None}


def wait_committed(bootstrap: str, group: str, expected: int, timeout: float) -> list[tuple[float, int]]:
    """(time, events committed by ``group``) from the first commit to the one covering ``expected`` events.

    The pricer commits a batch only after inserting it, so this tracks rows landing in ClickHouse without
    querying the pricer: polling its query endpoint every 50 ms cost it ~10% of its CPU.
    """
    consumer, tps, _ = _group_offsets(bootstrap, group)
    lows = [consumer.get_watermark_offsets(tp, timeout=10)[0] for tp in tps]
    deadline = time.perf_counter() + timeout
    samples: list[tuple[float, int]] = []
    try:
        while time.perf_counter() < deadline:
            committed = consumer.committed(tps, timeout=10)
            done = sum(max(c.offset - low, 0) for c, low in zip(committed, lows, strict=True))
            now = time.perf_counter()
            if done and (not samples or done != samples[-1][1]):
                samples.append((now, done))
            if done >= expected:
                break
            time.sleep(POLL_S)
    finally:
        consumer.close()
    return samples or [(time.perf_counter(), 0)]


async def _freshness(url: str, headers: dict[str, str], body: bytes, query: tuple[int, Path], count: int,
                     rate: float) -> list[float]:
    pool = httpload.Pool(url, body, headers)
    ended: dict[str, float] = {}
    seen: dict[str, float] = {}

    async def one() -> None:
        answer = await pool.request()
        if answer.status == 200 and answer.event_id:
            ended[answer.event_id] = answer.done

    async def send() -> None:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks, return_exceptions=True)

    sending = asyncio.ensure_future(send())
    deadline = time.perf_counter() + count / rate + 30
    while time.perf_counter() < deadline:
        pending = [i for i in ended if i not in seen]
        if pending:
            ids = ",".join(f"'{i}'" for i in pending[:500])
            text = await asyncio.to_thread(ch_query, *query, "SELECT toString(event_id) FROM usage_costs "
                                           f"WHERE team = '{FRESH_TEAM}' AND event_id IN ({ids})")
            now = time.perf_counter()
            for line in text.split():
                seen.setdefault(line, now)
        elif sending.done():
            break
        await asyncio.sleep(POLL_S)
    pool.close()
    missing = [i for i in ended if i not in seen]
    if missing:
        raise RuntimeError(f"freshness: {len(missing)} of {len(ended)} events never became visible in 30 s")
    return [seen[i] - ended[i] for i in ended]


def freshness(url: str, headers: dict[str, str], body: bytes, query: tuple[int, Path], count: int,
              rate: float) -> dict[str, Any]:
    """Freshness of ``count`` requests sent at ``rate``/s, in ms (poll period POLL_S bounds the resolution)."""
    lags = sorted(httpload.run(_freshness(url, headers, body, query, count, rate)))
    if not lags:
        raise RuntimeError("freshness: no request through the gateway succeeded")
    p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
    return {"samples": len(lags), "p50_ms": round(statistics.median(lags) * 1000, 1), "p99_ms": round(p99 * 1000, 1),
            "max_ms": round(lags[-1] * 1000, 1), "poll_ms": POLL_S * 1000}
