"""Budgets across gateway replicas, end to end: real gateway processes, real Kafka, the pricer writing the ledger
to embedded ClickHouse, and the project's fake upstream.

The overshoot test drives hundreds of concurrent requests of random sizes (plain, streamed, and streams the
client cancels) through three replicas sharing one small budget, then checks the ledger's final spend against
budget + the bound (R - 1) * (N + L*d) * c_max, with N, L*d, d and c_max as measured in the run, and that every
refusal was justified by spend and reservations that really existed.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from aimeter.local.kafka import death_signal_hook, free_port
from aimeter.local.stack import Stack, settings_env
from aimeter.metrics_auth import ensure_token
from aimeter.settings import Settings
from aimeter.store.client import query_endpoint_client

pytestmark = pytest.mark.integration

OVERSHOOT_USD = Decimal("0.50")
CONFIG = """
backends:
  openai:
    kind: openai
    base_url: http://127.0.0.1:{port}/v1
    deployment: proprietary
    provider: openai
  anthropic:
    kind: anthropic
    base_url: http://127.0.0.1:{port}
    deployment: proprietary
    provider: anthropic
models:
  gpt-4o: {{backend: openai}}
  gpt-4o-mini: {{backend: openai}}
  text-embedding-3-small: {{backend: openai}}
  claude-sonnet-4-6: {{backend: anthropic}}
budgets:
  output_limit: 4096
  pricer_lag_s: {lag}
  caps:
    - {{name: overshoot-probe, scope: team, value: overshoot, usd: "{overshoot}", period: month}}
    - {{name: sdk-probe, scope: team, value: sdk, usd: "0.001", period: day, timezone: Europe/Paris}}
    - {{name: restart-probe, scope: team, value: restart, usd: "0.05", period: day}}
    - {{name: closed-probe, scope: team, value: closed, usd: "100", on_kafka_down: fail_closed}}
    - {{name: open-probe, scope: team, value: open, usd: "100", on_kafka_down: fail_open}}
    - {{name: apis-probe, scope: team, value: apis, usd: "100", period: week, timezone: America/New_York}}
"""
# A stream the client abandons stays in flight at the gateway until its next write fails: at most the rest of the
# stream (20 chunks, <= 20 ms apart) plus the upstream's latency (<= 200 ms).
CANCEL_NOTICE_S = 1.0
FILLER = " ".join(["abcdefghij"] * 12)  # 12 words: the fake counts 4 + words; we estimate ~bytes/4 (higher)


@dataclass
class Replicas:
    """The stack (fake upstream, pricer, gateway 1) plus more gateway processes on the same Kafka and ledger."""

    stack: Stack
    ports: list[int]
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def spawn(self, index: int, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        settings = self.stack.settings
        log = (settings.data_dir / "logs" / f"gateway-{index}.log").open("ab")
        environ = {**os.environ, **settings_env(settings), "AIMETER_KAFKA_BOOTSTRAP": self.stack.bootstrap,
                   "AIMETER_CONFIG": str(self.stack.config_path), "AIMETER_DATA_DIR": str(settings.data_dir),
                   "AIMETER_GATEWAY_PORT": str(port), "AIMETER_GATEWAY_ID": f"budget-gw-{index}", **(env or {})}
        proc = subprocess.Popen([sys.executable, "-m", "aimeter", "gateway"], stdout=log, stderr=subprocess.STDOUT,
                                env=environ, preexec_fn=death_signal_hook(), start_new_session=True)  # noqa: PLW1509
        wait_health(f"http://127.0.0.1:{port}", proc)
        self.extra.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        proc.wait(timeout=60)
        self.extra.remove(proc)


def wait_health(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"gateway at {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def status(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/budgets", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return orjson.loads(answer.read())


def budget_of(url: str, token: str, name: str) -> dict[str, Any]:
    return next(b for b in status(url, token)["budgets"] if b["name"] == name)


def wait_current(url: str, token: str, timeout: float = 60) -> None:
    """Until the replica has loaded the ledger and reached the topic (its budgets are enforceable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(url, token)["ledger_current"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url}: budget ledger not current after {timeout} s")


@pytest.fixture(scope="module")
def replicas(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    data = tmp_path_factory.mktemp("budgets").resolve()
    upstream = free_port()
    config = data / "config.yaml"
    config.write_text(CONFIG.format(port=upstream, lag=600, overshoot=OVERSHOOT_USD), encoding="utf-8")
    settings = Settings(data_dir=data, kafka_bootstrap=kafka_bootstrap, gateway_port=free_port(),
                        query_port=free_port(), pricer_group=f"pricer-{uuid.uuid4().hex[:8]}",
                        pricer_metrics_port=free_port(), config=config, auth="none")
    stack = Stack(settings, config, fake_upstream_port=upstream)
    running = Replicas(stack, [settings.gateway_port, free_port(), free_port()])
    try:
        stack.start()
        for index, port in enumerate(running.ports[1:], start=2):
            running.spawn(index, port)
        token = ensure_token(settings.resolved_metrics_token_file)
        for url in running.urls():
            wait_current(url, token)
        yield running
    finally:
        for proc in list(running.extra):
            proc.kill()
            proc.wait(timeout=30)
        stack.stop()


def token_of(running: Replicas) -> str:
    return ensure_token(running.stack.settings.resolved_metrics_token_file)


def ledger_spend(running: Replicas, team: str, events: int, timeout: float = 120) -> tuple[Decimal, int]:
    """The team's spend in the priced ledger once ``events`` rows have landed (the pricer is asynchronous)."""
    settings = running.stack.settings
    client = query_endpoint_client(settings.resolved_clickhouse_url, settings.query_port)
    deadline = time.monotonic() + timeout
    rows: list[Any] = []
    while time.monotonic() < deadline:
        rows = client.query("SELECT count(), toString(sum(cost_usd)), countIf(cost_usd IS NULL) FROM usage_costs "
                            "FINAL WHERE team = {t:String}", parameters={"t": team}).result_rows
        if rows[0][0] >= events:
            break
        time.sleep(0.5)
    count, total, unpriced = rows[0]
    assert count == events, f"{count} priced rows for team {team}, expected {events}"
    assert unpriced == 0, f"{unpriced} rows without a cost: the bound assumes every request is priced"
    return Decimal(total or 0), count


@dataclass
class Sent:
    replica: int
    start: float
    end: float = 0.0
    status: int = 0
    error: str = ""
    kind: str = "plain"


def directive(completion: int, stream: bool, rng: random.Random) -> str:
    latency = rng.randint(10, 200)
    steer = f"fake: completion={completion} latency_ms={latency}"
    if stream:
        steer += f" chunks=20 gap_ms={rng.randint(2, 20)} words=40"
    return f"{steer} {FILLER}"


async def one_request(session: aiohttp.ClientSession, url: str, index: int, rng: random.Random,
                      team: str) -> Sent:
    kind = rng.choice(["plain", "plain", "stream", "cancel"])
    cap = rng.randint(200, 2000)
    completion = rng.randint(1, cap)
    body = {"model": "gpt-4o", "max_tokens": cap, "stream": kind != "plain",
            "messages": [{"role": "user", "content": directive(completion, kind != "plain", rng)}]}
    sent = Sent(index, time.monotonic(), kind=kind)
    async with session.post(f"{url}/v1/chat/completions", json=body, headers={"x-aimeter-team": team}) as answer:
        sent.status = answer.status
        if answer.status != 200:
            sent.error = (await answer.json())["error"]["message"]
        elif kind == "cancel":
            for _ in range(rng.randint(1, 4)):
                await answer.content.readline()
            answer.close()  # the client goes away mid-stream
        else:
            await answer.read()
    sent.end = time.monotonic()
    return sent


async def drive(urls: list[str], total: int, per_replica: int, seed: int, team: str) -> list[Sent]:
    rng = random.Random(seed)
    gates = [asyncio.Semaphore(per_replica) for _ in urls]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def run(n: int) -> Sent:
            replica = n % len(urls)
            async with gates[replica]:
                await asyncio.sleep(rng.random() * 0.01)
                return await one_request(session, urls[replica], replica, rng, team)
        return await asyncio.gather(*(run(n) for n in range(total)))


USD = r"\$([0-9]+\.[0-9]+)"
REFUSAL = re.compile(rf"spent {USD} and {USD} reserved by requests in flight; this request may cost up to {USD}")


def most_unseen(sent: list[Sent], replica: int, delay: float) -> int:
    """N + L*d as it happened: the most requests of one replica that another could not yet have counted at one
    moment (admitted by then, and not ended more than ``delay`` before it)."""
    mine = [s for s in sent if s.replica == replica and s.status == 200]
    worst = 0
    for moment in (s.start for s in mine):
        worst = max(worst, sum(1 for s in mine if s.start <= moment and s.end >= moment - delay))
    return worst


def test_overshoot_stays_within_the_bound(replicas: Replicas, capsys: pytest.CaptureFixture[str]) -> None:
    urls, token = replicas.urls(), token_of(replicas)
    per_replica, total = 16, 360
    started = time.monotonic()
    sent = asyncio.run(drive(urls, total, per_replica, seed=18, team="overshoot"))
    elapsed = time.monotonic() - started
    answered = [s for s in sent if s.status == 200]
    refused = [s for s in sent if s.status == 429]
    assert len(answered) + len(refused) == total, {s.status for s in sent} - {200, 429}
    assert refused, "the budget never filled: the test proves nothing"
    spend, _ = ledger_spend(replicas, "overshoot", len(answered))
    views = [status(u, token) for u in urls]
    delay = max(v["max_delay_s"] for v in views)
    largest = max(Decimal(v["largest_reservation_usd"]) for v in views)
    unseen = max(most_unseen(sent, r, delay) for r in range(len(urls)))
    bound = (len(urls) - 1) * unseen * largest
    overshoot = spend - OVERSHOOT_USD
    with capsys.disabled():  # the bound and the overshoot belong in the CI log, passing or not
        print(f"\nbudget ${OVERSHOOT_USD}; {total} requests in {elapsed:.1f} s over {len(urls)} replicas "
              f"({len(answered)} answered: {sum(s.kind == 'stream' for s in answered)} streamed, "
              f"{sum(s.kind == 'cancel' for s in answered)} cancelled mid-stream; {len(refused)} refused); "
              f"ledger spend ${spend:.6f}; overshoot ${overshoot:.6f}; "
              f"bound (R-1)*(N+L*d)*c_max = {len(urls) - 1}*{unseen}*${largest:.6f} = ${bound:.6f} (d = {delay:.3f} s)")
    assert spend <= OVERSHOOT_USD + bound
    # No request was refused while its budget had room for it: each refusal names spend that really happened
    # (never more than the ledger's final total) and reservations of requests really in flight on that replica.
    for s in refused:
        found = REFUSAL.search(s.error)
        assert found is not None, s.error
        spent, reserved, worst = (Decimal(g) for g in found.groups())
        assert spent + reserved + worst > OVERSHOOT_USD, s.error
        assert spent <= spend + Decimal("0.000001"), s.error
        in_flight = sum(1 for o in answered if o.replica == s.replica and o.start <= s.end
                        and o.end + (CANCEL_NOTICE_S if o.kind == "cancel" else 0) >= s.start)
        assert reserved <= in_flight * largest + Decimal("0.000001"), (s.error, in_flight)


def ask(url: str, team: str, max_tokens: int = 1000, completion: int = 1000) -> tuple[int, str]:
    """One chat completion through the official openai SDK: (200, "") or (status, the error's message)."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                           default_headers={"x-aimeter-team": team})
    try:
        client.chat.completions.create(model="gpt-4o", max_tokens=max_tokens, messages=[
            {"role": "user", "content": f"fake: completion={completion} {FILLER}"}])
    except openai.APIStatusError as exc:
        return exc.status_code, str(exc)
    return 200, ""


def test_refusal_is_the_apis_own_429_with_reset_and_retry_after(replicas: Replicas) -> None:
    url = replicas.urls()[0]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                           default_headers={"x-aimeter-team": "sdk"})
    with pytest.raises(openai.RateLimitError) as refused:  # $0.001 cannot fit 1000 output tokens of gpt-4o
        client.chat.completions.create(model="gpt-4o", max_tokens=1000, messages=[{"role": "user", "content": "hi"}])
    error = refused.value
    assert "sdk-probe" in error.message
    assert "resets at" in error.message
    assert int(error.response.headers["retry-after"]) >= 1
    assert budget_of(url, token_of(replicas), "sdk-probe")["spent_usd"] in ("0", "0E-12")
    small = client.chat.completions.create(model="gpt-4o", max_tokens=20, messages=[
        {"role": "user", "content": "fake: completion=20"}])
    assert small.usage is not None  # a request whose worst case fits is served
    claude = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0,
                                 default_headers={"x-aimeter-team": "sdk"})
    with pytest.raises(anthropic.RateLimitError) as also:  # Anthropic's own error shape: rate_limit_error
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=1000, messages=[{"role": "user", "content": "hi"}])
    assert also.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "sdk-probe" in also.value.message


def restart_config(replicas: Replicas, lag: float) -> Path:
    path = replicas.stack.settings.data_dir / f"config-lag{int(lag)}.yaml"
    text = CONFIG.format(port=replicas.stack.fake_upstream_port, lag=lag, overshoot=OVERSHOOT_USD)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("lag", [0, 600], ids=["spend-from-clickhouse", "spend-from-topic"])
def test_restart_mid_period_reloads_committed_spend(replicas: Replicas, lag: float) -> None:
    """A replica restarted mid-period knows what was spent before: from the ledger (events started before its
    cutoff, lag 0) or from the usage topic (after it, lag 600 s). Without the reload it would start at $0."""
    token, team = token_of(replicas), f"restart-{int(lag)}"
    config = restart_config(replicas, lag)
    text = config.read_text(encoding="utf-8").replace("value: restart,", f"value: {team},")
    config.write_text(text, encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"AIMETER_CONFIG": str(config)}
    first = replicas.spawn(10 + int(lag), port, env)
    wait_current(url, token)
    answered = 0
    while (result := ask(url, team))[0] == 200:  # each ~$0.01 of a $0.05 budget
        answered += 1
        assert answered < 20, "the budget never refused"
    assert result[0] == 429
    assert "restart-probe" in result[1]
    spend, _ = ledger_spend(replicas, team, answered)  # the pricer has priced every one of them
    replicas.stop(first)
    second = replicas.spawn(10 + int(lag), port, env)
    wait_current(url, token)
    view = budget_of(url, token, "restart-probe")
    print(f"\nrestart (lag {lag} s): {answered} requests, ledger ${spend:.6f}, reloaded ${view['spent_usd']}")
    assert Decimal(view["spent_usd"]) == spend
    assert ask(url, team)[0] == 429
    replicas.stop(second)


def test_kafka_down_fails_open_or_closed_per_budget(replicas: Replicas) -> None:
    """A replica that cannot reach Kafka cannot see other replicas' spend: a fail_closed budget refuses, a
    fail_open one serves (its events are journaled and spooled until Kafka is back, as always)."""
    token, port = token_of(replicas), free_port()
    url = f"http://127.0.0.1:{port}"
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = replicas.spawn(20, port, {"AIMETER_KAFKA_BOOTSTRAP": dead})
    deadline = time.monotonic() + 30
    while not status(url, token)["budgets"][0]["period_start"] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # the follower has tried the broker at least once
    assert status(url, token)["ledger_current"] is False
    closed = ask(url, "closed", max_tokens=10, completion=10)
    assert closed[0] == 429
    assert "unreachable" in closed[1]
    assert "closed-probe" in closed[1]
    assert ask(url, "open", max_tokens=10, completion=10)[0] == 200
    replicas.stop(proc)
    healthy = replicas.urls()[0]  # a replica that reaches Kafka serves the fail_closed budget
    assert ask(healthy, "closed", max_tokens=10, completion=10)[0] == 200


def test_every_api_settles_to_the_ledgers_cost(replicas: Replicas) -> None:
    """Chat, the Responses API (plain and streamed), embeddings, Anthropic Messages (streamed, and a stream the
    client abandons) all settle through the one emit path: the replica's spent equals the priced ledger's."""
    url, token, team = replicas.urls()[1], token_of(replicas), "apis"
    headers = {"x-aimeter-team": team}
    oa = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, default_headers=headers)
    an = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, default_headers=headers)
    oa.chat.completions.create(model="gpt-4o", max_tokens=300, messages=[
        {"role": "user", "content": "fake: prompt=120 completion=250 cached=40"}])
    oa.responses.create(model="gpt-4o", max_output_tokens=400, input="fake: prompt=90 completion=333 reasoning=30")
    with oa.responses.stream(model="gpt-4o", max_output_tokens=500, input="fake: completion=420 chunks=5") as s:
        s.until_done()
    oa.embeddings.create(model="text-embedding-3-small", input="fake: prompt=700")
    with an.messages.stream(model="claude-sonnet-4-6", max_tokens=600, messages=[
            {"role": "user", "content": "fake: prompt=200 completion=510 cache_write_5m=50"}]) as s:
        s.until_done()
    with an.messages.stream(model="claude-sonnet-4-6", max_tokens=900, messages=[
            {"role": "user", "content": "fake: completion=800 chunks=40 gap_ms=50 words=200"}]) as s:
        for _ in zip(range(3), s.text_stream, strict=False):
            pass  # leave after three deltas: a cancelled stream, its output estimated
    spend, _ = ledger_spend(replicas, team, 6)
    deadline = time.monotonic() + 30
    while (view := budget_of(url, token, "apis-probe"))["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"\nsix requests over four APIs: replica spent ${view['spent_usd']}, ledger ${spend}")
    assert Decimal(view["spent_usd"]) == spend
    assert view["reserved_usd"] in ("0", "0E-12")


def test_budget_view_needs_the_metrics_token_and_refuses_web_pages(replicas: Replicas) -> None:
    url, token = replicas.urls()[0], token_of(replicas)
    for headers, code in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                          ({"Authorization": f"Bearer {token}", "Origin": "https://evil.example"}, 403)):
        request = urllib.request.Request(f"{url}/budgets", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == code
