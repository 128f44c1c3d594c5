"""Copy self-hosted GPU cost periods from the config into ClickHouse, where the fully loaded view reads them.

The config is the one source of GPU costs; ClickHouse needs them to bill whole hours (including
hours nobody used). At start the pricer (and ``aimeter reprice``) computes what the table should
hold for every configured self-hosted backend and writes only the difference: a new version of a
period that changed, a tombstone for a period the config no longer lists. Running it twice, or
from several pricer replicas, writes nothing the second time. Backends that left the config keep
their periods, so the hours they were paid for stay in the history.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from aimeter.config import GatewayConfig, GpuCost
from aimeter.pricer.gpu import SECONDS_PER_HOUR

TABLE = "gpu_cost_periods"
COLUMNS = ["backend", "effective_from", "effective_to", "gpu_type", "gpu_count", "usd_per_hour", "tokens_per_hour",
           "version", "is_deleted"]
ALWAYS = datetime(1970, 1, 1, tzinfo=UTC)  # an open start, as a sorting-key value
Key = tuple[str, datetime]
Values = tuple[datetime | None, str, int, Decimal, Decimal]


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def period_values(gpu: GpuCost) -> Values:
    return (gpu.effective_to, gpu.gpu_type, gpu.gpu_count, gpu.usd_per_hour,
            gpu.sustained_tokens_per_second * SECONDS_PER_HOUR)


def desired_periods(config: GatewayConfig) -> dict[Key, Values]:
    """What the table should hold for the backends the config declares GPU costs for."""
    return {
        (name, period.effective_from or ALWAYS): period_values(period)
        for name, backend in config.backends.items()
        for period in backend.gpu_periods
    }


def plan_changes(config: GatewayConfig, current: dict[Key, Values], version: int) -> list[list[Any]]:
    """Rows to insert so the table matches the config (pure). Equal Decimals compare equal at any scale."""
    desired = desired_periods(config)
    rows = [[*key, *values, version, 0] for key, values in desired.items() if current.get(key) != values]
    configured = {name for name, _ in desired}
    for key, values in current.items():
        if key not in desired and key[0] in configured:
            rows.append([*key, *values, version, 1])
    return rows


def read_current(client: Client) -> tuple[dict[Key, Values], int]:
    result = client.query(f"SELECT {', '.join(COLUMNS[:7])} FROM {TABLE} FINAL WHERE is_deleted = 0")  # noqa: S608
    current = {
        (row[0], _utc(row[1])): (_utc(row[2]), row[3], int(row[4]), row[5], row[6])
        for row in result.result_rows
    }
    latest = int(client.command(f"SELECT max(version) FROM {TABLE}") or 0)  # noqa: S608
    return current, latest


def sync_gpu_periods(client: Client, config: GatewayConfig) -> int:
    """Write what changed; returns the number of rows written (0 when ClickHouse already matches)."""
    current, latest = read_current(client)
    rows = plan_changes(config, current, latest + 1)
    if rows:
        client.insert(TABLE, rows, column_names=COLUMNS)
    return len(rows)
