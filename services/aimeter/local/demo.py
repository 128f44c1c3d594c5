"""Synthetic traffic for ``aimeter up --demo``: several teams, proprietary and self-hosted models.

It goes through the real gateway with the official openai and anthropic SDKs, the way an application would;
the fake upstream is told the usage to report through a directive in the prompt.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai

from aimeter.gateway.keys import KeyAdmin, new_key, split_key

TEAMS = {"search": "ranking", "support": "helpdesk-bot", "research": "evals", "platform": "codegen"}
MODELS = [("gpt-4o-mini", 5), ("gpt-4o", 2), ("claude-haiku-4-5", 2), ("llama-3.1-70b", 3)]
# The self-hosted model is paced to half the capacity examples/demo.yaml declares for it (12,000 tok/s), as a
# real backend's queue would: unpaced, a fast machine sent ~20x what the GPUs sustain, and the fully loaded
# cost (the GPU's hours shared over more tokens than it can serve) came out below the marginal price.
SELF_HOSTED = "llama-3.1-70b"
SELF_HOSTED_TOKENS_PER_S = 6000


@dataclass
class DemoStats:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    streamed: int = 0
    error_samples: list[str] = field(default_factory=list)
    self_hosted_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def self_hosted_room(self, tokens: int) -> bool:
        """Would ``tokens`` more keep the self-hosted model within its pace since the start?"""
        return self.self_hosted_tokens + tokens <= SELF_HOSTED_TOKENS_PER_S * (time.monotonic() - self.started + 1)


def directive(rng: random.Random) -> tuple[str, int]:
    """What the fake upstream is told to report, and the tokens that makes."""
    prompt, completion = rng.randint(200, 6000), rng.randint(20, 800)
    cached = rng.choice([0, 0, prompt // 2])
    return f"fake: prompt={prompt} completion={completion} cached={cached}", prompt + completion


def issue_demo_keys(store: KeyAdmin) -> dict[str, str]:
    """One gateway key per demo team, created the way `aimeter keys create` does (in the keys topic, or the
    key file with AIMETER_KEYS_STORE=file)."""
    keys, records = {}, []
    for team, project in TEAMS.items():
        keys[team], record = new_key(team, project, "", datetime.now(UTC))
        records.append(record)
    store.put(records)
    return keys


def wait_until_accepted(base_url: str, keys: dict[str, str], timeout: float = 10.0) -> None:
    """Until the gateway accepts every key (its model list, answered without an upstream): a new key reaches a
    gateway within milliseconds from the topic, within a second from a key file. Only a 401 is waited out;
    a gateway that does not answer is left to the traffic, which counts the failures."""
    deadline = time.monotonic() + timeout
    for key in keys.values():
        request = urllib.request.Request(  # noqa: S310 - the gateway URL we were given
            f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - the gateway URL we were given
                    break
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gateway at {base_url} still refused the demo keys after "
                                       f"{timeout:.0f} s (401)") from None
                time.sleep(0.05)
            except OSError:
                return


def revoke_demo_keys(store: KeyAdmin, keys: dict[str, str]) -> int:
    """Revoke the keys ``issue_demo_keys`` made, as `aimeter keys revoke` would: a demo leaves no active key
    behind (they stay listed, revoked, like any other key). Returns how many were revoked."""
    ids = {parts[0] for parts in map(split_key, keys.values()) if parts is not None}
    if not ids:
        return 0
    records, now = store.load(), datetime.now(UTC).isoformat()
    revoked = [replace(records[key_id], revoked_at=now) for key_id in sorted(ids)
               if key_id in records and records[key_id].active]
    store.put(revoked)
    return len(revoked)


async def _one(clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic], model: str, text: str,
               headers: dict[str, str], stream: bool) -> None:
    """One request the way an app would send it: the OpenAI SDK, or the Anthropic SDK for Claude."""
    oai, claude = clients
    reply: object
    if model.startswith("claude"):
        reply = await claude.messages.create(model=model, max_tokens=1024, messages=[{"role": "user", "content": text}],
                                             stream=stream, extra_headers=headers)
    else:
        reply = await oai.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                                  stream=stream, extra_headers=headers)
    if stream:
        assert isinstance(reply, AsyncIterable), "stream=True answers an async stream"
        async for _ in reply:
            pass


async def _worker(base_url: str, keys: dict[str, str], stats: DemoStats, deadline: float, seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - demo traffic, not security
    clients = (openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="set-per-request", max_retries=0),
               anthropic.AsyncAnthropic(base_url=base_url, api_key="set-per-request", max_retries=0))
    models, weights = zip(*MODELS, strict=True)
    try:
        while time.monotonic() < deadline:
            team = rng.choice(list(TEAMS))
            model = rng.choices(models, weights)[0]
            stream = rng.random() < 0.2
            # The team's own key: attribution comes from it, as for a real app.
            headers = ({"Authorization": f"Bearer {keys[team]}", "x-api-key": keys[team]} if keys
                       else {"X-Aimeter-Team": team, "X-Aimeter-Project": TEAMS[team]})
            told, tokens = directive(rng)
            text = f"Summarise ticket {rng.randint(1, 9999)}. {told}"
            if model == SELF_HOSTED:
                if not stats.self_hosted_room(tokens):
                    model = "gpt-4o-mini"  # the self-hosted backend is at its pace: this one goes to a paid API
                else:
                    stats.self_hosted_tokens += tokens
            stats.sent += 1
            try:
                await _one(clients, model, text, headers, stream)
                stats.ok += 1
                stats.streamed += stream
            except (openai.APIError, anthropic.APIError) as exc:
                stats.errors += 1
                if len(stats.error_samples) < 3:
                    stats.error_samples.append(f"{model}: {exc}")
    finally:
        await clients[0].close()
        await clients[1].close()


async def run_traffic(base_url: str, keys: dict[str, str], seconds: float, concurrency: int = 8) -> DemoStats:
    """Send traffic for ``seconds``, printing progress every 2 s; returns what was sent."""
    stats = DemoStats()
    start = stats.started
    deadline = start + seconds
    workers = [asyncio.create_task(_worker(base_url, keys, stats, deadline, seed)) for seed in range(concurrency)]
    while not all(w.done() for w in workers):
        await asyncio.wait(workers, timeout=2.0)
        elapsed = time.monotonic() - start
        print(f"demo: {min(elapsed, seconds):5.1f}/{seconds:.0f} s  requests={stats.sent}  ok={stats.ok}  "
              f"streamed={stats.streamed}  errors={stats.errors}  ({stats.sent / max(elapsed, 1e-9):.0f} req/s)",
              flush=True)
    for w in workers:
        w.result()
    return stats


def demo_config(source: Path, port: int, data_dir: Path, default_port: int = 8090) -> Path:
    """The demo config with its backends pointed at the fake upstream on ``port``.

    ``examples/demo.yaml`` names 127.0.0.1:8090; for another port a copy is written under the data dir.
    """
    if port == default_port:
        return source
    text = source.read_text(encoding="utf-8").replace(f"127.0.0.1:{default_port}", f"127.0.0.1:{port}")
    target = data_dir / "demo.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# Generated by `aimeter up --demo` from {source.name} with the fake upstream on port {port};\n"
                      f"# edit {source.name}, not this file.\n" + text, encoding="utf-8")
    return target


def self_hosted_notes(rows: Sequence[Sequence[Any]]) -> list[str]:
    """One line per self-hosted backend from :func:`aimeter.reports.queries.self_hosted_use_query`: what its GPU
    time cost, how much of its capacity the requests used, and why fully loaded is above (idle capacity) or,
    when the backend served more than its declared capacity, below the marginal price."""
    lines = []
    for backend, gpu_usd, capacity, used, idle_usd, marginal_usd in rows:
        share = f"{100 * used / capacity:.0f}%" if capacity else "all"
        head = (f"self-hosted {backend}: GPU time since it was declared ${gpu_usd:.6f} (idle ${idle_usd:.6f}); "
                f"{used:,} tokens used of a {int(capacity):,}-token capacity ({share})")
        marginal = marginal_usd if marginal_usd is not None else Decimal(0)
        if used > capacity:
            lines.append(f"{head}. Fully loaded ${gpu_usd:.6f} is below the marginal ${marginal:.6f} because the "
                         "requests exceeded the declared sustained_tokens_per_second: the GPU's hours are shared over "
                         "more tokens than it is declared to serve (raise it if the backend really sustains this).")
        else:
            lines.append(f"{head}. Fully loaded ${gpu_usd:.6f} = the marginal ${marginal:.6f} charged per request "
                         "plus the idle capacity.")
    return lines
