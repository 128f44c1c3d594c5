"""The ``budget_windows`` table the budget-use panel reads: each budget's windows, the config's and those kept on
gateway key records (``aimeter budgets set --key``).

The rows are pure (:func:`window_rows`); :func:`sync_budget_windows` writes them with a writable client. In
embedded mode only the process that owns chDB can write, so the pricer calls it at start, beside the GPU cost
history it also syncs from the config, then :func:`keep_budget_windows` re-syncs whenever the key store's budgets
change; ``aimeter alerts`` syncs too when its store is a server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from aimeter.budgets.model import Budget, budget_window
from aimeter.budgets.spec import key_budgets
from aimeter.config import GatewayConfig
from aimeter.gateway.keys import KeyFile, KeyStore
from aimeter.settings import Settings
from aimeter.store.client import get_client

log = logging.getLogger(__name__)

AHEAD = timedelta(days=400)  # windows written ahead of each sync, so the panel stays right between restarts
COLUMNS = ["name", "scope", "scope_value", "enforcement", "period", "timezone", "amount_usd", "window_start",
           "window_reset", "synced_at"]


def config_budgets(config: GatewayConfig) -> list[Budget]:
    """The config's ``budgets.caps`` as budgets (none when the config has no ``budgets:`` section)."""
    return [cap.budget() for cap in config.budgets.caps] if config.budgets is not None else []


def window_rows(budgets: Sequence[Budget], now: datetime, ahead: timedelta = AHEAD) -> list[list[Any]]:
    """One row per budget per window, from the window containing ``now`` until ``now + ahead``."""
    rows: list[list[Any]] = []
    for budget in budgets:
        window = budget_window(budget, now)
        while window.start < now + ahead:
            rows.append([budget.name, budget.scope.value, budget.scope_value, budget.enforcement.value,
                         budget.period.value, budget.timezone, budget.amount_usd, window.start, window.reset, now])
            window = budget_window(budget, window.reset)
    return rows


def sync_budget_windows(client: Client, budgets: Sequence[Budget], now: datetime | None = None) -> int:
    """Write the budgets' windows as one sync (``synced_at = now``, default the clock); with no budget the table
    is emptied, so the panel shows none. Returns the rows written."""
    rows = window_rows(budgets, now or datetime.now(UTC))
    if rows:
        client.insert("budget_windows", rows, column_names=COLUMNS)
    else:  # no budget: the newest sync must still hide the old ones (they were removed from the config)
        client.command("TRUNCATE TABLE IF EXISTS budget_windows")
    return len(rows)


def key_store_for(settings: Settings, bootstrap: str, who: str) -> KeyStore | None:
    """The key store the gateways read (not started), or None when gateway keys are off (no key budgets)."""
    if settings.auth != "keys":
        return None
    if settings.keys_store == "file":
        return KeyFile(settings.resolved_keys_file)
    from aimeter.gateway.keys_kafka import KafkaKeyStore  # noqa: PLC0415 - Kafka client only for the kafka store

    # A snapshot of its own: gateways sharing the data dir write theirs, this reader never touches it.
    return KafkaKeyStore(bootstrap, settings.data_dir / f"keys.{who}.snapshot.json", who=who)


def budgets_at_start(fixed: Sequence[Budget], keys: KeyStore | None, wait_s: float) -> list[Budget]:
    """``fixed`` and the key store's budgets, read once (``aimeter alerts``): waits up to ``wait_s`` for Kafka; when
    it does not answer the store warns once and its last snapshot's (or no) key budgets are used."""
    if keys is None:
        return list(fixed)
    start = getattr(keys, "start", None)
    try:
        if start is not None:
            start(wait_s)
        sync = WindowsSync(None, fixed, keys)
        return sync.budgets()
    finally:
        close = getattr(keys, "close", None)
        if close is not None:
            close()


class WindowsSync:
    """The config's budgets plus the key store's, written to ``budget_windows`` whenever that set changes."""

    def __init__(self, client: Client | None, fixed: Sequence[Budget], keys: KeyStore | None) -> None:
        self.client = client
        self.fixed = list(fixed)
        self.keys = keys
        self.written: list[Budget] | None = None  # the set of the last sync (None: not synced by this object yet)
        self.synced_at: datetime | None = None  # that sync's synced_at, to the millisecond the table keeps
        self._problems: set[str] = set()

    def budgets(self) -> list[Budget]:
        if self.keys is None:
            return list(self.fixed)
        self.keys.refresh()
        keyed, problems = key_budgets(self.keys.records)
        for problem in sorted(set(problems) - self._problems):  # each skipped entry said once, not every check
            log.warning("budget windows: %s", problem)
        self._problems = set(problems)
        return [*self.fixed, *keyed.values()]

    def latest_is_ours(self) -> bool:
        """Whether the table's newest sync is this object's: another writer (``aimeter alerts`` against a server
        writes the config's budgets alone when it starts) would otherwise hide the key budgets from the panel."""
        if self.synced_at is None or self.client is None:
            return False
        newest = self.client.query("SELECT max(synced_at) FROM budget_windows").result_rows[0][0]
        return isinstance(newest, datetime) and newest.replace(tzinfo=None) == self.synced_at.replace(tzinfo=None)

    def sync(self, now: datetime | None = None) -> int | None:
        """Write the windows when the budgets differ from the last sync's, or another writer synced since; the rows
        written, None if nothing changed."""
        budgets = self.budgets()
        if budgets == self.written and (not budgets or self.latest_is_ours()):
            return None
        now = now or datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # DateTime64(3): what the table keeps
        if self.client is None:
            raise ValueError("WindowsSync without a ClickHouse client reads budgets only; it cannot write them")
        written = sync_budget_windows(self.client, budgets, now)
        self.written, self.synced_at = budgets, now
        return written


async def keep_budget_windows(url: str, fixed: Sequence[Budget], keys: KeyStore | None, *, wait_s: float,
                              every_s: float = 2.0) -> None:
    """Keep ``budget_windows`` at the config's budgets plus the key store's: read the keys (waiting up to ``wait_s``
    for Kafka, which warns once and keeps trying when it does not answer: the config's budgets stay meanwhile), then
    check every ``every_s``. On a thread and a client of its own, off the consumer's insert path. A failed write is
    logged and retried at the next check."""
    sync = WindowsSync(get_client(url), fixed, keys)
    sync.written = list(fixed)  # the caller wrote them at start: with no key budget, nothing to write again
    start = getattr(keys, "start", None)
    try:
        if start is not None:
            await asyncio.to_thread(start, wait_s)
        while True:
            try:
                written = await asyncio.to_thread(sync.sync)
            except Exception:
                log.exception("budget windows: the sync failed; the dashboards show the previous budgets until the "
                              "next check in %.0f s", every_s)
                sync.written = None
            else:
                if written is not None:
                    log.info("budget windows: %d budgets (%d from the config), %d window rows",
                             len(sync.written or []), len(sync.fixed), written)
            await asyncio.sleep(every_s)
    finally:
        close = getattr(keys, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
