"""A budget set on a key with ``aimeter budgets set --key`` reaches the dashboards: the running pricer writes it into
``budget_windows`` within seconds (no restart), the budget-use panel lists it, and it leaves the panel once its key
is revoked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from aimeter.alerts.budget_table import WindowsSync, keep_budget_windows, sync_budget_windows
from aimeter.budgets.model import Budget, ScopeKind
from aimeter.gateway.keys import KeyFile, KeyRecord
from aimeter.gateway.keys_kafka import KafkaKeyStore
from aimeter.grafana.macros import QueryContext, expand
from aimeter.local.stack import Stack
from aimeter.reports.budget_use import budget_use_panel
from aimeter.reports.sql import NO_FILTERS
from tests.integration.test_alerts_cli import start_alerts, stop, webhook  # noqa: F401 - a fixture
from tests.integration.test_budget_keys import aimeter

pytestmark = pytest.mark.integration
LATEST = ("SELECT DISTINCT name, scope, scope_value, period, timezone, toString(amount_usd) FROM budget_windows FINAL "
          "WHERE synced_at = (SELECT max(synced_at) FROM budget_windows) AND name = {n:String}")
SYNCS = "SELECT uniqExact(synced_at) FROM budget_windows"
WAIT_S = 30.0  # the pricer checks the keys every 2 s; the rest is Kafka delivery and a loaded shared box


def latest(clickhouse: Any, name: str) -> list[tuple[Any, ...]]:
    return clickhouse.query(LATEST, parameters={"n": name}).result_rows


def waited_for(check: Any, what: str) -> float:
    """Seconds until ``check()`` held; fails after WAIT_S."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT_S:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"not within {WAIT_S:.0f} s: {what}")


def panel_rows(clickhouse: Any) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)
    sql = expand(budget_use_panel(NO_FILTERS), QueryContext(now - timedelta(hours=1), now, timedelta(minutes=1)))
    return clickhouse.query(sql).result_rows


def test_a_key_budget_reaches_the_budget_use_panel_and_leaves_with_its_key(stack: Stack, clickhouse: Any) -> None:
    created = aimeter(stack, "keys", "create", "--team", "windows-keys")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.splitlines()[0].strip().split("_")[1]
    name = f"panel-cap-{key_id}"
    revoked = False
    try:
        put = aimeter(stack, "budgets", "set", name, "--key", key_id, "--usd", "7.5", "--period", "week",
                      "--timezone", "Europe/Paris", "--soft")
        assert put.returncode == 0, put.stderr
        took = waited_for(lambda: bool(latest(clickhouse, name)), f"budget_windows holds {name}")
        print(f"\nkey budget in budget_windows {took:.1f} s after `aimeter budgets set` returned")
        assert latest(clickhouse, name) == [(name, "key", key_id, "week", "Europe/Paris", "7.5")]
        syncs = clickhouse.query(SYNCS).result_rows[0][0]
        time.sleep(5)  # two checks of the pricer: an unchanged set of budgets is not written again
        assert clickhouse.query(SYNCS).result_rows[0][0] == syncs
        rows = [r for r in panel_rows(clickhouse) if r[0] == name]
        assert len(rows) == 1, rows
        budget, scope, scope_value, enforcement, period, budget_usd = rows[0][:6]
        assert (budget, scope, scope_value, enforcement, period, budget_usd) == (
            name, "key", key_id, "soft", "week", Decimal("7.5"))

        gone = aimeter(stack, "keys", "revoke", key_id)
        assert gone.returncode == 0, gone.stderr
        revoked = True
        took = waited_for(lambda: not latest(clickhouse, name), f"{name} leaves budget_windows with its key")
        print(f"revoked key's budget gone from budget_windows after {took:.1f} s")
        assert all(r[0] != name for r in panel_rows(clickhouse))
    finally:
        if not revoked:  # the keys topic is shared by the session's stacks: leave no budget behind
            aimeter(stack, "keys", "revoke", key_id)


def test_the_sync_writes_on_a_change_or_after_another_writer_only(metering_store: Client, tmp_path: Any) -> None:
    """``aimeter alerts`` against a server writes the config's budgets alone when it starts: the pricer's next check
    writes the key budgets back; an unchanged set is not written again."""
    team = Budget("team-cap", ScopeKind.TEAM, "t", Decimal(5))
    keys = KeyFile(tmp_path / "keys.json")
    keys.save({"k1": KeyRecord("k1", "s", "d", "t", limits={"budgets": [{"name": "k1-cap", "usd": "2"}]})})
    sync = WindowsSync(metering_store, [team], keys)
    names = ("SELECT DISTINCT name FROM budget_windows FINAL WHERE synced_at = (SELECT max(synced_at) FROM "
             "budget_windows) ORDER BY name")
    try:
        both = sync.sync()  # two monthly budgets: the same number of windows each (13 or 14, by the date)
        assert both is not None
        assert both >= 26
        assert both % 2 == 0
        assert metering_store.query(names).result_rows == [("k1-cap",), ("team-cap",)]
        assert sync.sync() is None
        time.sleep(0.01)
        sync_budget_windows(metering_store, [team])  # the other writer
        assert metering_store.query(names).result_rows == [("team-cap",)]
        assert sync.sync() == both
        assert metering_store.query(names).result_rows == [("k1-cap",), ("team-cap",)]
        keys.save({})  # the key's record gone: its budget leaves
        assert sync.sync() == both // 2
        assert metering_store.query(names).result_rows == [("team-cap",)]
    finally:
        sync_budget_windows(metering_store, [])  # the panel tests read this table too: leave it empty


def test_kafka_down_keeps_the_config_budgets_and_warns_once(metering_store: Client, chdb_path: Any, tmp_path: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    team = Budget("team-cap", ScopeKind.TEAM, "t", Decimal(5))
    keys = KafkaKeyStore(dead, tmp_path / "keys.snapshot.json", who="pricer")

    async def run_a_while() -> None:
        task = asyncio.ensure_future(keep_budget_windows(f"chdb://{chdb_path}", [team], keys, wait_s=0.5,
                                                         every_s=0.2))
        await asyncio.sleep(3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        sync_budget_windows(metering_store, [team])  # as the pricer does at start
        with caplog.at_level(logging.WARNING):
            asyncio.run(run_a_while())
        assert metering_store.query("SELECT DISTINCT name FROM budget_windows FINAL WHERE synced_at = "
                                    "(SELECT max(synced_at) FROM budget_windows)").result_rows == [("team-cap",)]
        warned = [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]
        assert len(warned) == 1, warned
    finally:
        sync_budget_windows(metering_store, [])


def test_aimeter_alerts_counts_a_soft_key_budget_of_the_key_store(
        stack: Stack, webhook: Any, tmp_path: Any) -> None:  # noqa: F811 - the imported fixture
    """A soft budget set on a key before ``aimeter alerts`` starts is among the budgets it alerts on (before: the
    config's only). It posts nothing here: the fired log (ai.alerts.v1) is the session's, and test_alerts_cli counts
    what it holds; a key-scope budget's posts are tested in tests/unit/test_alerts*.py."""
    url, _posts = webhook
    created = aimeter(stack, "keys", "create", "--team", "alerts-keys")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.splitlines()[0].strip().split("_")[1]
    log = tmp_path / "alerts.log"
    try:
        put = aimeter(stack, "budgets", "set", f"soft-key-{key_id}", "--key", key_id, "--usd", "5", "--period",
                      "day", "--soft")
        assert put.returncode == 0, put.stderr
        listed = aimeter(stack, "budgets", "list", "--config", str(stack.config_path), "--format", "json")
        assert listed.returncode == 0, listed.stderr
        every = json.loads(listed.stdout)  # the config's and the key store's, as `aimeter budgets list` reads them
        soft = sum(1 for b in every if b["enforcement"] == "soft")
        assert any(b["name"] == f"soft-key-{key_id}" for b in every)
        proc = start_alerts(stack, stack.config_path, url, log)
        time.sleep(1)  # its SIGTERM handler is set just after the line it printed
        stop(proc)
        assert f"alerts: {soft} soft budgets (of {len(every)})" in log.read_text(), log.read_text()
    finally:
        aimeter(stack, "keys", "revoke", key_id)  # the keys topic is shared by the session's stacks
