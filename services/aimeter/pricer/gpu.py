"""Self-hosted marginal cost: what one request adds to the GPU bill. Pure.

Two measures, chosen per event:

* **GPU-seconds**, when the backend reported the compute time it spent on the request
  (``backend_compute_seconds``: Ollama's ``prompt_eval_duration + eval_duration``, llama.cpp's
  ``timings``): seconds x backend $/hour / 3600 / ``parallel_requests``.
* **Throughput** otherwise: the backend's $/hour spread over the tokens it sustains in an hour,
  $/hour / (sustained tokens/s x 3600) per token.

Why the division by ``parallel_requests``: servers batch concurrent requests on the same GPUs,
so a request's compute time overlaps with others'. Charging each request its full wall time at
the whole node's rate would bill the same GPU-second several times over (vLLM at 64 concurrent
sequences would overstate cost ~64x). Ollama and llama.cpp report per-request time and run a
small, configured number of slots (``OLLAMA_NUM_PARALLEL``, ``--parallel``); dividing by that
number charges each slot its share of the node, which is exact when the slots are full and
understates a little when they are not — the fully loaded view (by the hour, in ClickHouse)
bills the remainder as ``idle``, so no GPU dollar is lost either way.
"""

from __future__ import annotations

from decimal import Decimal

from aimeter.config import GpuCost
from aimeter.events import TokenUsage
from aimeter.pricer.rates import Components, UsageCounts, class_counts, money, split_exact

SECONDS_PER_HOUR = Decimal(3600)
THROUGHPUT = "throughput"
GPU_SECONDS = "gpu_seconds"


def by_throughput(usage: TokenUsage, gpu: GpuCost) -> Components:
    """Every token costs the same here, whatever its class; each class is rounded once."""
    per_hour, tokens_per_hour = gpu.usd_per_hour, gpu.sustained_tokens_per_second * SECONDS_PER_HOUR
    return Components({c: money(n * per_hour / tokens_per_hour) for c, n in class_counts(usage).items() if n})


def by_gpu_seconds(usage: UsageCounts, seconds: float, gpu: GpuCost) -> Components:
    """The measured cost, split across classes by token count so the parts add up to it exactly."""
    measured = Decimal(repr(seconds))  # the float's shortest decimal spelling, not its binary expansion
    total = money(measured * gpu.usd_per_hour / SECONDS_PER_HOUR / gpu.parallel_requests)
    return Components(split_exact(total, class_counts(usage)))


def describe(gpu: GpuCost, basis: str) -> str:
    """The price source of a self-hosted row: which GPU period, and which measure."""
    head = f"gpu:{gpu.gpu_count}x{gpu.gpu_type} ${gpu.usd_per_hour}/h"
    since = f" from {gpu.effective_from:%Y-%m-%d %H:%M}" if gpu.effective_from else ""
    if basis == GPU_SECONDS:
        return f"{head}{since} by GPU-seconds/{gpu.parallel_requests} parallel"
    return f"{head}{since} at {gpu.sustained_tokens_per_second} tok/s"
