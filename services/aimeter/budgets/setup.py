"""Builds a gateway replica's budget gate from the config: the ledger, the price book, the topic follower."""

from __future__ import annotations

import logging
import time
from typing import Any

from aimeter.budgets.gate import BudgetGate
from aimeter.budgets.ledger import Ledger
from aimeter.budgets.pricing import Costs
from aimeter.budgets.sync import TopicFollower
from aimeter.config import GatewayConfig
from aimeter.pricer.overrides_load import load_price_book
from aimeter.store.client import chdb_path, get_client, query_endpoint_client

log = logging.getLogger(__name__)


def ledger_client(url: str, query_port: int) -> Any:
    """The priced ledger, read-only: the pricer's query endpoint in embedded mode (one process owns chDB), else
    the ClickHouse server."""
    if chdb_path(url) is not None:
        return query_endpoint_client(url, query_port)
    return get_client(url)


def gate_for(config: GatewayConfig, bootstrap: str, *, clickhouse_url: str, query_port: int) -> BudgetGate | None:
    """None when the config declares no budgets (the gateway then does no budget work at all)."""
    if config.budgets is None or not config.budgets.caps:
        return None
    ledger = Ledger([spec.budget() for spec in config.budgets.caps])
    costs = Costs(load_price_book(config))
    now = time.time()
    follower = TopicFollower(bootstrap, costs, cutoff=now - config.budgets.pricer_lag_s, now=now,
                             loader=lambda: ledger_client(clickhouse_url, query_port), accounts=ledger.accounts)
    follower.start()
    # Serve with the period's spend known: wait (bounded) until the ledger is loaded and the topic read to where it
    # ended. Past the wait the gateway serves; until the ledger is current, fail_closed budgets refuse.
    if not follower.wait_current(config.budgets.start_wait_s):
        log.warning("budgets: the ledger is not current after %.0f s (ClickHouse query endpoint or Kafka not "
                    "answering); serving: fail_open budgets count what is known, fail_closed ones refuse until "
                    "it is", config.budgets.start_wait_s)
    return BudgetGate(ledger, costs, config.budgets, follower)
