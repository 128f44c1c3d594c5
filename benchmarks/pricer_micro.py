"""Pricer micro benchmark: CPU per event of build_batch (parse, validate, price, rows) and insert_batch.

No Kafka: N realistic UsageEvent JSON messages (as the gateway encodes them) are priced and inserted
into a fresh embedded ClickHouse (chDB) in batches, and CPU time is read with getrusage(RUSAGE_SELF),
which counts every thread of the process (chDB inserts on its own threads). Run pinned to one core:

    taskset -c 0 .venv/bin/python -m benchmarks.pricer_micro --events 50000 --batch 5000 --runs 3

Each run uses new event ids and a new chDB directory; the medians over runs are printed, and the
issue #6 budget (50,000 events/s on one core) is 20 µs per event for everything the pricer does.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aimeter.config import parse_config
from aimeter.events import Attribution, TokenUsage, UsageEvent
from aimeter.events.ids import new_event_id
from aimeter.pricer.overrides_load import load_price_book
from aimeter.pricer.rows import build_batch
from aimeter.pricer.write import insert_batch
from aimeter.store.client import get_client
from aimeter.store.migrations import migrate

CONFIG = parse_config("""
backends:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", deployment: proprietary, provider: openai}
  anthropic: {kind: anthropic, base_url: "https://api.anthropic.com", deployment: proprietary, provider: anthropic}
  gemini: {kind: gemini, base_url: "https://generativelanguage.googleapis.com", deployment: proprietary,
           provider: google}
  vllm:
    kind: openai_compatible
    base_url: "http://127.0.0.1:8000/v1"
    deployment: self_hosted
    provider: vllm
    gpu: {gpu_type: H100, gpu_count: 2, usd_per_gpu_hour: "2.50", sustained_tokens_per_second: 2500}
    reference_model: {provider: openai, model: gpt-4o}
  ollama:
    kind: ollama
    base_url: "http://127.0.0.1:11434"
    deployment: self_hosted
    provider: ollama
    gpu: {gpu_type: L4, gpu_count: 1, usd_per_node_hour: "0.80", sustained_tokens_per_second: 400}
models:
  gpt-4o-mini: {backend: openai}
  gpt-4o: {backend: openai}
  o3: {backend: openai}
  claude-sonnet-4-5: {backend: anthropic}
  claude-opus-4-1: {backend: anthropic}
  gemini-2.5-pro: {backend: gemini}
  gemini-2.5-flash: {backend: gemini}
  llama: {backend: vllm, upstream_model: meta-llama/Llama-3.1-70B-Instruct}
  qwen: {backend: ollama}
""")
# (model requested, model served, backend, provider, api, weight): mostly list-priced traffic.
TRAFFIC = [
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "openai", "openai.chat", 30),
    ("gpt-4o", "gpt-4o-2024-08-06", "openai", "openai", "openai.chat", 10),
    ("o3", "o3-2025-04-16", "openai", "openai", "openai.responses", 5),
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "openai", "openai.batch", 3),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic", "anthropic", "anthropic.messages", 20),
    ("claude-opus-4-1", "claude-opus-4-1-20250805", "anthropic", "anthropic", "anthropic.messages", 3),
    ("gemini-2.5-pro", "gemini-2.5-pro", "gemini", "google", "gemini.generate", 7),
    ("gemini-2.5-flash", "gemini-2.5-flash", "gemini", "google", "gemini.generate", 7),
    ("llama", "meta-llama/Llama-3.1-70B-Instruct", "vllm", "vllm", "openai.chat", 12),
    ("qwen", "qwen2.5:7b", "ollama", "ollama", "ollama.chat", 3),
]
TEAMS = [f"team-{i:02d}" for i in range(20)]
RATE = 2000  # events/s the fleet produces: a 5,000-event batch spans ~2.5 s (a backlog replays faster)


def make_events(n: int, seed: int = 7, rate: int = RATE, start: datetime | None = None) -> list[bytes]:
    """Valid events as a gateway fleet sends them, ``rate`` per second in (roughly) time order, encoded
    exactly as the gateway encodes them."""
    rng = random.Random(seed)
    weights = [t[-1] for t in TRAFFIC]
    start = start or datetime.now(UTC) - timedelta(seconds=n / rate)
    out = []
    for i in range(n):
        requested, served, backend, provider, api, _ = rng.choices(TRAFFIC, weights)[0]
        # Up to a second out of order: partitions and gateway replicas interleave.
        at = start + timedelta(seconds=i / rate + rng.random())
        inp = rng.randrange(10, 20000)
        read = rng.randrange(0, inp) if rng.random() < 0.4 else 0
        write = rng.randrange(0, inp - read) if provider == "anthropic" and rng.random() < 0.3 else 0
        out_tokens = rng.randrange(1, 2000)
        reasoning = rng.randrange(0, out_tokens) if requested == "o3" else 0
        team = rng.choice(TEAMS)
        tags = {"env": "prod"} if rng.random() < 0.5 else {}
        event = UsageEvent(
            event_id=new_event_id(), gateway_id="gw-1", started_at=at,
            first_token_at=at + timedelta(milliseconds=150) if i % 2 else None,
            ended_at=at + timedelta(milliseconds=rng.randrange(200, 9000)), api=api, backend=backend,
            provider=provider, deployment="self_hosted" if backend in ("vllm", "ollama") else "proprietary",
            model_requested=requested, model_served=served, stream=bool(i % 2), status="ok", http_status=200,
            usage_source="reported",
            usage=TokenUsage(input_tokens=inp, cache_read_input_tokens=read, cache_creation_input_tokens=write,
                             output_tokens=out_tokens, reasoning_output_tokens=reasoning),
            backend_compute_seconds=round(rng.uniform(0.1, 20), 6) if backend == "ollama" else None,
            attribution=Attribution(team=team, project=f"{team}-proj-{i % 3}", user=f"user{i % 500}",
                                    api_key_id=f"key{i % 50:03d}", tags=tags),
        )
        out.append(event.model_dump_json().encode())
    return out


def cpu() -> float:
    """User + system seconds of every thread of this process (chDB inserts and merges on its own threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(n: int, batch_size: int, seed: int, *, freeze: bool = False) -> tuple[float, float]:
    """(µs per event in build_batch, µs per event for the rest), for one fresh store.

    build_batch is pure Python on this thread: its thread CPU time. Everything else the process spends
    while the batches go in (insert_batch, and chDB's background merges, whichever call they overlap)
    is counted as insert.
    """
    values = make_events(n, seed)
    book = load_price_book(CONFIG)
    # Steady state: a running pricer has loaded its prices and memos long before (another hour of events here).
    build_batch(make_events(100, seed + 1000, start=datetime.now(UTC) - timedelta(hours=2)), book, datetime.now(UTC))
    if freeze:  # what a long-running process can do once started: its startup objects leave the GC's scans
        gc.freeze()
    root = Path(tempfile.mkdtemp(prefix="pricer-micro-"))
    try:
        client = get_client(f"chdb://{root / 'ch'}")
        migrate(client)
        build = 0.0
        start = cpu()
        for i in range(0, n, batch_size):
            chunk = values[i:i + batch_size]
            t0 = time.thread_time()
            batch = build_batch(chunk, book, datetime.now(UTC))
            build += time.thread_time() - t0
            assert not batch.poison, batch.poison[:1]
            insert_batch(client, batch)
        total = cpu() - start
        stored = client.command("SELECT count() FROM usage_costs")
        assert int(stored) == n, stored
        client.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return build / n * 1e6, (total - build) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after loading the price book")
    args = parser.parse_args()
    builds, inserts = [], []
    for run in range(args.runs):
        wall = time.perf_counter()
        build, insert = one_run(args.events, args.batch, seed=run, freeze=args.gc_freeze)
        builds.append(build)
        inserts.append(insert)
        print(f"run {run + 1}: build_batch {build:7.1f} µs/event   insert_batch {insert:7.1f} µs/event   "
              f"total {build + insert:7.1f}   (wall {time.perf_counter() - wall:.1f} s incl. event generation)")
    build, insert = statistics.median(builds), statistics.median(inserts)
    total = statistics.median(b + i for b, i in zip(builds, inserts, strict=True))
    print(f"median of {args.runs}: build_batch {build:.1f} µs/event, insert_batch {insert:.1f} µs/event, "
          f"total {total:.1f} µs/event = {1e6 / total:,.0f} events/s per core")


if __name__ == "__main__":
    main()
