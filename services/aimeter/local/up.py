"""``aimeter up``: start the stack, supervise it, optionally drive the demo, show what ClickHouse recorded.

Supervision runs on the main thread (children get their death signal from the thread that started
them): a part that exits is restarted with backoff while the others keep serving, and every change
prints one line plus a status line.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aimeter.gateway.keys_kafka import KafkaUnreachableError
from aimeter.keys_cli import key_admin
from aimeter.local.demo import (
    DemoStats,
    issue_demo_keys,
    revoke_demo_keys,
    run_traffic,
    self_hosted_notes,
    wait_until_accepted,
)
from aimeter.local.stack import Stack, StackError
from aimeter.reports.format import render
from aimeter.reports.queries import count_query, self_hosted_use_query
from aimeter.reports.sql import spend_query
from aimeter.settings import Settings
from aimeter.store.client import report_client


def wait_for_rows(stack: Stack, expected: int, timeout: float = 120.0, tick: Callable[[], None] = lambda: None,
                  ) -> int:
    """Poll ClickHouse until the pipeline has stored ``expected`` events; returns how many it has."""
    client = report_client(stack.settings.resolved_clickhouse_url, stack.settings.query_port)
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline:
        tick()
        try:
            stored = int(str(client.command(count_query())))
        except Exception:  # noqa: BLE001 - the pricer (the query endpoint) may be restarting: ask again
            stored = 0
        if stored >= expected:
            break
        time.sleep(0.5)
    return stored


def supervise(stack: Stack) -> None:
    """One supervision round; prints what changed and then the status line."""
    changes = stack.supervise()
    for line in changes:
        print(f"up: {line}", flush=True)
    if changes:
        print(f"up: {stack.status()}", flush=True)


def print_spend(stack: Stack, since: datetime) -> None:
    client = report_client(stack.settings.resolved_clickhouse_url, stack.settings.query_port)
    # One window for every table, ending now: the GPU time billed grows with the clock, so a window ending
    # later (it was now + 1 s, clamped to each query's own now) gave each table a slightly different idle.
    until = datetime.now(UTC)
    for by in ("team", "model"):
        sql, params = spend_query(by, since, until)
        result = client.query(sql, parameters=params)
        print(f"\nspend by {by} (from ClickHouse):")
        print(render(result.column_names, result.result_rows))
    print()
    for line in self_hosted_notes(client.query(*self_hosted_use_query(since, until)).result_rows):
        print(line)


def _interrupt(_signum: int, _frame: object) -> None:
    """SIGTERM stops the stack the same orderly way Ctrl-C does."""
    raise KeyboardInterrupt


def run_up(settings: Settings, config_path: Path, *, demo: bool, keep_running: bool, seconds: float,
           upstream_port: int | None) -> int:
    stack = Stack(settings, config_path, fake_upstream_port=upstream_port)
    signal.signal(signal.SIGTERM, _interrupt)
    keys: dict[str, str] = {}
    try:
        stack.start()
        if settings.alerts_webhook_url:  # soft-budget and spend-spike alerts, supervised like the other parts
            stack.start_child("alerts")
        if demo and settings.auth == "keys":
            # Issued once Kafka runs (the keys topic is the store); the demo starts when the gateway accepts them.
            keys = issue_demo_keys(key_admin(settings, stack.bootstrap))
            wait_until_accepted(stack.gateway_url, keys)
        print(f"up: gateway ready at {stack.gateway_url}/v1 (OpenAI-compatible)", flush=True)
        code = 0
        print(f"up: {stack.status()}", flush=True)
        if demo:
            code = _demo(stack, seconds, keys)
            _revoke(settings, stack.bootstrap, keys)
        if keep_running:
            print("up: serving; a part that exits is restarted; Ctrl-C stops everything", flush=True)
            while True:
                supervise(stack)
                time.sleep(0.5)
        return code
    except (StackError, KafkaUnreachableError, TimeoutError) as exc:
        print(f"aimeter up: {exc}", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _revoke(settings, stack.bootstrap, keys)  # (after Ctrl-C or a failure too)
        print("up: stopping", flush=True)
        stack.stop()


def _revoke(settings: Settings, bootstrap: str, keys: dict[str, str]) -> None:
    """The demo's keys are revoked once its traffic is done: it leaves no active key behind."""
    try:
        revoked = revoke_demo_keys(key_admin(settings, bootstrap), keys)
    except ValueError as exc:  # Kafka gone (e.g. Ctrl-C while it stopped): say which keys stay active
        print(f"demo: could not revoke its keys ({exc}); revoke them with `aimeter keys revoke`", flush=True)
        return
    if revoked:
        print(f"demo: revoked the {revoked} gateway keys it made (`aimeter keys list` shows them as revoked)",
              flush=True)


def _demo(stack: Stack, seconds: float, keys: dict[str, str]) -> int:
    started = datetime.now(UTC) - timedelta(seconds=1)
    before = wait_for_rows(stack, 0, timeout=1)
    print(f"demo: sending {seconds:.0f} s of traffic from 4 teams to 4 models (OpenAI, Anthropic and "
          "self-hosted Llama) through the gateway", flush=True)
    stats = DemoStats()

    def traffic() -> None:
        stats.__dict__.update(asyncio.run(run_traffic(stack.gateway_url, keys, seconds)).__dict__)

    sender = threading.Thread(target=traffic, name="demo-traffic", daemon=True)
    sender.start()
    while sender.is_alive():  # the main thread keeps supervising while the demo runs
        supervise(stack)
        sender.join(0.5)
    for sample in stats.error_samples:
        print(f"demo: error sample: {sample}")
    print(f"demo: waiting for {stats.sent} events to reach ClickHouse …", flush=True)
    t0 = time.monotonic()
    stored = wait_for_rows(stack, before + stats.sent, tick=lambda: supervise(stack)) - before
    print(f"demo: {stored}/{stats.sent} events stored in {time.monotonic() - t0:.1f} s", flush=True)
    print_spend(stack, started)
    return 0 if stored == stats.sent and stats.errors == 0 else 1
