"""``aimeter alerts``: start the alert state from the ledger and the fired log, then follow the usage topic."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client
from faststream.confluent import KafkaBroker

from aimeter.alerts.app import Alerter, fired_log, make_broker, run_alerter
from aimeter.alerts.budget_table import budgets_at_start, config_budgets, key_store_for, sync_budget_windows
from aimeter.alerts.fired import FiredLogError, ensure_alerts_topic, read_fired
from aimeter.alerts.ledger import load_ledger
from aimeter.alerts.rules import Rules
from aimeter.alerts.state import AlertState
from aimeter.alerts.webhook import Webhook
from aimeter.budgets.model import Budget
from aimeter.config import GatewayConfig
from aimeter.pricer.gpu_periods import history_config, read_history
from aimeter.pricer.overrides_load import load_price_book
from aimeter.pricer.pricebook import PriceBook
from aimeter.settings import Settings
from aimeter.store.client import chdb_path, get_client, report_client

log = logging.getLogger("aimeter.alerts")
TICK_S = 30.0


def rules_from(settings: Settings) -> Rules:
    return Rules(tuple(int(p) for p in settings.alerts_thresholds_pct.split(",")), settings.alerts_spike_factor,
                 settings.alerts_spike_floor_usd, settings.alerts_spike_trailing_hours,
                 timedelta(seconds=settings.alerts_spike_grace_s))


async def prepare(settings: Settings, budgets: list[Budget], book: PriceBook, client: Client, *, bootstrap: str,
                  now: datetime) -> tuple[KafkaBroker, Alerter, Webhook, int]:
    """The started state: fired log read, ledger loaded; returns the broker (not started), the alerter, its
    webhook and how many alerts had already fired."""
    assert settings.alerts_webhook_url is not None
    await asyncio.to_thread(ensure_alerts_topic, bootstrap)
    fired = await asyncio.to_thread(read_fired, bootstrap)
    since = now - timedelta(seconds=settings.alerts_recount_s)
    state = AlertState(budgets, rules_from(settings), since=since, now=now)
    state.load_fired(fired)
    webhook = Webhook(settings.alerts_webhook_url)
    alerter = Alerter(state, book, webhook.post, lambda: datetime.now(UTC))
    alerter.decided(await asyncio.to_thread(load_ledger, client, state, now))
    broker = make_broker(bootstrap, alerter, settings.alerts_group, since)
    alerter.keep = fired_log(broker)
    return broker, alerter, webhook, len(fired)


async def run_alerts(settings: Settings, config: GatewayConfig, bootstrap: str) -> int:
    """Until SIGTERM/SIGINT. Returns 2 when no webhook is configured (nothing to post to)."""
    if not settings.alerts_webhook_url:
        print("aimeter alerts: AIMETER_ALERTS_WEBHOOK_URL is not set: there is nowhere to post alerts; not starting",
              flush=True)
        return 2
    # The key store's budgets as of this start (a key budget set later is alerted on after a restart).
    keys = key_store_for(settings, bootstrap, "alerts")
    budgets = await asyncio.to_thread(budgets_at_start, config_budgets(config), keys, settings.keys_start_wait_s)
    rules = rules_from(settings)
    url = settings.resolved_clickhouse_url
    client = report_client(url, settings.query_port)
    now = datetime.now(UTC)
    if chdb_path(url) is None:  # a server: write the panel's budget windows here too (embedded: the pricer does)
        sync_budget_windows(get_client(url), budgets, now)
    # The pricer's own book: config, overrides and the stored GPU cost history, so a budget counts what it counts.
    base = load_price_book(config)
    book = PriceBook(history_config(config, await asyncio.to_thread(read_history, client)), base.overrides)
    try:
        broker, alerter, webhook, fired = await prepare(settings, budgets, book, client, bootstrap=bootstrap,
                                                        now=now)
    except FiredLogError as exc:
        print(f"aimeter alerts: {exc}", flush=True)
        return 1
    soft = sum(1 for b in budgets if not b.hard)
    print(f"alerts: {soft} soft budgets (of {len(budgets)}), thresholds {settings.alerts_thresholds_pct}%, spike "
          f"{rules.spike_factor}x the trailing {rules.spike_trailing_hours} h mean and >= ${rules.spike_floor_usd}/h; "
          f"{fired} alerts already fired; following {bootstrap}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_alerter(broker, alerter, TICK_S, stop)
    finally:
        await webhook.close()
        log.info("alerts stopped: %d delivered this run", len(alerter.delivered))
    return 0
