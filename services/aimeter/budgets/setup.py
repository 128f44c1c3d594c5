"""Builds a gateway replica's budget gate from the config: the ledger, the price book, the topic follower."""

from __future__ import annotations

import logging
import time
from typing import Any

from aimeter.budgets.gate import BudgetGate
from aimeter.budgets.ledger import Ledger
from aimeter.budgets.model import Budget
from aimeter.budgets.pricing import Costs
from aimeter.budgets.spec import BudgetsConfig, key_budgets
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


def gate_for(config: GatewayConfig, bootstrap: str, *, clickhouse_url: str, query_port: int,
             keys: Any = None) -> BudgetGate | None:
    """None when neither the config nor a key store can declare budgets (the gateway then does no budget work).

    With a key store the gate exists even without budgets yet: a key's budget set later takes effect within
    seconds. The ledger and its topic follower exist only while some budget does."""
    budgets_config = config.budgets or BudgetsConfig()
    fixed = [spec.budget() for spec in budgets_config.caps]
    if not fixed and keys is None:
        return None
    costs = Costs(load_price_book(config))

    def rebuild(budgets: list[Budget]) -> tuple[Ledger, TopicFollower | None]:
        ledger = Ledger(budgets)
        if not budgets:
            return ledger, None
        now = time.time()
        follower = TopicFollower(bootstrap, costs, cutoff=now - budgets_config.pricer_lag_s, now=now,
                                 loader=lambda: ledger_client(clickhouse_url, query_port), accounts=ledger.accounts)
        follower.start()
        return ledger, follower

    from_keys, _ = key_budgets(keys.records) if keys is not None else ({}, [])
    ledger, follower = rebuild([*fixed, *from_keys.values()])
    # Serve with the period's spend known: wait (bounded) until the ledger is loaded and the topic read to where it
    # ended. Past the wait the gateway serves; until the ledger is current, fail_closed budgets refuse.
    if follower is not None and not follower.wait_current(budgets_config.start_wait_s):
        log.warning("budgets: the ledger is not current after %.0f s (ClickHouse query endpoint or Kafka not "
                    "answering); serving: fail_open budgets count what is known, fail_closed ones refuse until "
                    "it is", budgets_config.start_wait_s)
    gate = BudgetGate(ledger, costs, budgets_config, follower, keys=keys, fixed=fixed, rebuild=rebuild)
    gate.key_budgets = from_keys
    return gate
