"""Cluster mode DDL (issue 17): every migration, rewritten for ``AIMETER_CLICKHOUSE_CLUSTER``, is parsed by the
engine's own parser (``formatQuery`` on chDB, which parses without executing). No ClickHouse server or Keeper
runs here, so the statements themselves were never executed on a cluster."""

from __future__ import annotations

import re

import pytest

from aimeter.store.cluster import for_cluster
from aimeter.store.migrations import BOOKKEEPING, migration_files, statements

CLUSTER = "aimeter_cluster"
ALL = [s for _v, path in migration_files() for s in statements(path.read_text(encoding="utf-8"), CLUSTER)]
ALL += statements(BOOKKEEPING, CLUSTER)


pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parser(chdb_client):
    return chdb_client  # formatQuery parses only: nothing is created in the session's engine


def test_every_generated_statement_parses(parser) -> None:
    for statement in ALL:
        [[formatted]] = parser.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows
        assert formatted


def test_every_table_is_replicated_with_a_distributed_table_of_its_name() -> None:
    created = [s for s in ALL if s.startswith("CREATE TABLE")]
    locals_ = {re.match(r"CREATE TABLE IF NOT EXISTS (\w+)_local ON CLUSTER", s).group(1): s
               for s in created if "_local ON CLUSTER" in s}
    assert {"usage_events", "usage_costs", "usage_rollup", "rollup_marks", "schema_migrations"} <= set(locals_)
    for name, ddl in locals_.items():
        assert re.search(r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{shard\}/\{database\}/", ddl), name
        distributed = next(s for s in created if s.startswith(f"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER"))
        assert f"Distributed({CLUSTER}, currentDatabase(), {name}_local, " in distributed
    assert all("ON CLUSTER" in s for s in ALL if not s.startswith("INSERT"))


def test_ledger_tables_shard_by_event_id_so_final_stays_exact() -> None:
    """A redelivered event and every re-rated version of it meet on one shard, where FINAL collapses them."""
    for table in ("usage_events", "usage_costs", "usage_cost_versions"):
        ddl = next(s for s in ALL if s.startswith(f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER"))
        assert ddl.endswith("cityHash64(event_id))"), ddl


def test_materialized_views_fire_on_local_tables() -> None:
    views = [s for s in ALL if s.startswith("CREATE MATERIALIZED VIEW")]
    assert views
    for view in views:
        assert re.search(r" TO \w+_local AS", view), view
        assert re.search(r"\bFROM \w+_local\b", view), view


def test_alter_runs_on_both_tables_and_ttl_on_the_local_one() -> None:
    assert for_cluster("ALTER TABLE t ADD COLUMN IF NOT EXISTS c UInt8", "c1") == [
        "ALTER TABLE t_local ON CLUSTER c1 ADD COLUMN IF NOT EXISTS c UInt8",
        "ALTER TABLE t ON CLUSTER c1 ADD COLUMN IF NOT EXISTS c UInt8"]
    assert for_cluster("ALTER TABLE t MODIFY TTL toDateTime(started_at) + toIntervalDay(9)", "c1") == [
        "ALTER TABLE t_local ON CLUSTER c1 MODIFY TTL toDateTime(started_at) + toIntervalDay(9)"]
