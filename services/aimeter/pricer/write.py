"""Writing a priced batch into ClickHouse: the two inserts and their deduplication tokens."""

from __future__ import annotations

import hashlib

from clickhouse_connect.driver.client import Client

from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, Batch


def dedup_token(batch: Batch) -> str:
    """Same events -> same token, so ClickHouse skips a retried insert it already applied."""
    digest = hashlib.sha256()
    for row in batch.event_rows:
        digest.update(row[0].bytes)
    return digest.hexdigest()


def insert_batch(client: Client, batch: Batch) -> None:
    """Events first, then their priced rows; each insert is idempotent under retry by its token."""
    token = dedup_token(batch)
    client.insert("usage_events", batch.event_rows, column_names=EVENT_COLUMNS,
                  settings={"insert_deduplication_token": token + ":events"})
    client.insert("usage_costs", batch.cost_rows, column_names=COST_COLUMNS,
                  settings={"insert_deduplication_token": token + ":costs"})
