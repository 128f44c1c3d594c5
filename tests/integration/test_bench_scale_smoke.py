"""`make bench-scale` stays runnable (it is not run in CI: 100M events take an hour): a tiny store generated
the same way, rolled up, and the month chargeback read with and without rollups gives the same lines."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pytest
from benchmarks import scale, scale_chart

from aimeter.reports import rollup
from aimeter.reports.sql import bound_window, chargeback_query
from aimeter.store.migrations import migrate

pytestmark = pytest.mark.integration


def test_bench_scale_smoke(chdb_path: Path, chdb_client, tmp_path: Path) -> None:
    chdb_client.command("DROP DATABASE IF EXISTS bench_scale_smoke SYNC")
    chdb_client.command("CREATE DATABASE bench_scale_smoke")
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", database="bench_scale_smoke")
    migrate(client)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    scale.generate(client, 3000, now - timedelta(days=scale.DAYS), chunk=1000)
    assert int(client.command("SELECT count() FROM usage_costs FINAL")) == 3000
    assert rollup.refresh(client).computed > 0
    month = (now.replace(day=1) - timedelta(days=1)).replace(day=1, hour=0)
    window = bound_window(month, (month + timedelta(days=32)).replace(day=1))
    rolled = client.query(*chargeback_query("team", window)).result_rows
    raw = client.query(*chargeback_query("team", dataclasses.replace(window, rollups=False))).result_rows
    assert rolled == raw
    assert len(rolled) > 1
    assert scale.chargeback_seconds(client, month, rollups=True, runs=1) > 0
    result = {"events": 3000, "chargeback_raw_s": 0.5, "chargeback_rollup_s": 0.1,
              "panels_raw_s": {"Chargeback: Chargeback by month": 1.0},
              "panels_rollup_s": {"Chargeback: Chargeback by month": 0.2, "Gateway operations: Latency": 0.3}}
    assert scale_chart.svg([result]).startswith("<svg")
    chdb_client.command("DROP DATABASE bench_scale_smoke SYNC")
