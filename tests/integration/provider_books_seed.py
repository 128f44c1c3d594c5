"""Known `aimeter reconcile --provider` results for the month of tests/integration/dashboards_seed.py
(February), for the "Metered vs billed per provider per day" panel (tests/integration/test_dashboards_panels.py).
Figures by hand:

=========  =========  ======  =======  =====================================================
day        provider   billed  metered  rows
=========  =========  ======  =======  =====================================================
02-03      openai     4.50    4.375    one cost row (model *), beyond tolerance
02-03      anthropic  0.10    0.10     two cost rows (0.04 + 0.06), within
02-15      openai     0.75    0.75     run 2 (newest) replaces run 1's 0.70 billed
=========  =========  ======  =======  =====================================================

Also a usage row (never in the panel: it has no money) and a cost row on 03-01 (outside the month).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from aimeter.provider_books.store import COLUMNS
from tests.integration.dashboards_seed import SINCE, UNTIL

D = Decimal
RUN1, RUN2 = UNTIL.replace(hour=1), UNTIL.replace(hour=2)


def _row(provider: str, kind: str, day: int, model: str, billed: Decimal | None, metered: Decimal | None,
         beyond: int = 0, run_at: datetime = RUN2, month_start: datetime = SINCE) -> list:
    values = {"provider": provider, "kind": kind, "bucket_width": "1d",
              "bucket_start": month_start.replace(day=day), "model": model, "scope": "*",
              "provider_requests": None, "provider_usd": billed, "ledger_usd": metered,
              "classification": "bypass" if beyond else "match", "explanation": "", "beyond_tolerance": beyond,
              "run_id": uuid.uuid5(uuid.NAMESPACE_URL, f"aimeter-books-seed/{run_at}"), "run_at": run_at}
    return [values.get(c, 0) for c in COLUMNS]


ROWS = [
    _row("openai", "cost", 3, "*", D("4.50"), D("4.375"), beyond=1),
    _row("anthropic", "cost", 3, "claude-a", D("0.04"), D("0.04")),
    _row("anthropic", "cost", 3, "claude-b", D("0.06"), D("0.06")),
    _row("openai", "cost", 15, "*", D("0.70"), D("0.75"), beyond=1, run_at=RUN1),
    _row("openai", "cost", 15, "*", D("0.75"), D("0.75")),
    _row("openai", "usage", 15, "gpt-4o-mini", None, None),
    _row("openai", "cost", 1, "*", D("9"), D("1"), beyond=1, month_start=UNTIL),
]


def seed_books(client: Client) -> None:
    """Fixed run ids and times: seeding again only adds rows FINAL collapses."""
    client.insert("provider_reconciliation", ROWS, column_names=COLUMNS)
