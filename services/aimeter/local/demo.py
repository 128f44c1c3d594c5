"""Synthetic traffic for ``aimeter up --demo``: several teams, proprietary and self-hosted models.

It goes through the real gateway with the official openai SDK, the way an application would;
the fake upstream is told the usage to report through a directive in the prompt.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import openai

TEAMS = {"search": "ranking", "support": "helpdesk-bot", "research": "evals", "platform": "codegen"}
MODELS = [("gpt-4o-mini", 5), ("gpt-4o", 2), ("llama-3.1-70b", 3)]


@dataclass
class DemoStats:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    streamed: int = 0
    error_samples: list[str] = field(default_factory=list)


def directive(rng: random.Random) -> str:
    prompt = rng.randint(200, 6000)
    cached = rng.choice([0, 0, prompt // 2])
    return f"fake: prompt={prompt} completion={rng.randint(20, 800)} cached={cached}"


async def _worker(base_url: str, stats: DemoStats, deadline: float, seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - demo traffic, not security
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="demo-key", max_retries=0)
    models, weights = zip(*MODELS, strict=True)
    try:
        while time.monotonic() < deadline:
            team = rng.choice(list(TEAMS))
            model = rng.choices(models, weights)[0]
            stream = rng.random() < 0.2
            headers = {"X-Aimeter-Team": team, "X-Aimeter-Project": TEAMS[team]}
            messages = [{"role": "user", "content": f"Summarise ticket {rng.randint(1, 9999)}. {directive(rng)}"}]
            stats.sent += 1
            try:
                if stream:
                    chunks = await client.chat.completions.create(model=model, messages=messages, stream=True,
                                                                  extra_headers=headers)
                    async for _ in chunks:
                        pass
                    stats.streamed += 1
                else:
                    await client.chat.completions.create(model=model, messages=messages, extra_headers=headers)
                stats.ok += 1
            except openai.APIError as exc:
                stats.errors += 1
                if len(stats.error_samples) < 3:
                    stats.error_samples.append(f"{model}: {exc}")
    finally:
        await client.close()


async def run_traffic(base_url: str, seconds: float, concurrency: int = 8) -> DemoStats:
    """Send traffic for ``seconds``, printing progress every 2 s; returns what was sent."""
    stats = DemoStats()
    start = time.monotonic()
    deadline = start + seconds
    workers = [asyncio.create_task(_worker(base_url, stats, deadline, seed)) for seed in range(concurrency)]
    while not all(w.done() for w in workers):
        await asyncio.wait(workers, timeout=2.0)
        elapsed = time.monotonic() - start
        print(f"demo: {min(elapsed, seconds):5.1f}/{seconds:.0f} s  requests={stats.sent}  ok={stats.ok}  "
              f"streamed={stats.streamed}  errors={stats.errors}  ({stats.sent / max(elapsed, 1e-9):.0f} req/s)",
              flush=True)
    for w in workers:
        w.result()
    return stats
