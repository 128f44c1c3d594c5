"""Writes a reconciliation run into ``provider_reconciliation`` (migration 0008). Figures and ids only: the
admin key never reaches this module."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from aimeter.provider_books.compare import Drift

COLUMNS = (
    "provider", "kind", "bucket_width", "bucket_start", "model", "scope",
    "provider_input_tokens", "ledger_input_tokens", "provider_cache_read_tokens", "ledger_cache_read_tokens",
    "provider_cache_write_tokens", "ledger_cache_write_tokens", "provider_output_tokens", "ledger_output_tokens",
    "provider_requests", "ledger_requests", "ledger_unread_requests", "ledger_unpriced_requests",
    "provider_usd", "ledger_usd", "classification", "explanation", "beyond_tolerance", "run_id", "run_at",
)


def row(provider: str, drift: Drift, run_id: uuid.UUID, run_at: datetime) -> list[Any]:
    p, led = drift.provider, drift.ledger
    return [provider, drift.kind, drift.width, drift.key.bucket_start, drift.key.model, drift.key.scope,
            p.input_tokens, led.input_tokens, p.cache_read_tokens, led.cache_read_tokens,
            p.cache_write_tokens, led.cache_write_tokens, p.output_tokens, led.output_tokens,
            p.requests, led.requests or 0, led.unread_requests, led.unpriced_requests,
            p.usd if drift.kind == "cost" else None, led.usd if drift.kind == "cost" else None,
            drift.classification, drift.explanation, int(drift.beyond), run_id, run_at]


def store(client: Client, provider: str, rows: Sequence[Drift], run_at: datetime) -> uuid.UUID:
    run_id = uuid.uuid4()
    if rows:
        client.insert("provider_reconciliation", [row(provider, d, run_id, run_at) for d in rows],
                      column_names=COLUMNS)
    return run_id
