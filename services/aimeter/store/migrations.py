"""Numbered, idempotent SQL migrations from ``schemas/clickhouse/NNNN_name.sql``.

Each file is applied once and recorded in ``schema_migrations``; the statements are also
written to be safe to re-run (IF NOT EXISTS), so a crash between apply and record is harmless.
"""

from __future__ import annotations

import re
from pathlib import Path

from clickhouse_connect.driver.client import Client

from aimeter.resources import data_path
from aimeter.store.cluster import for_cluster

MIGRATIONS_DIR = data_path("schemas", "clickhouse")
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def split_statements(sql: str) -> list[str]:
    """Statements end with ``;`` at the end of a line; comment-only fragments are dropped."""
    statements = []
    for part in re.split(r";\s*$", sql, flags=re.MULTILINE):
        code = "\n".join(line for line in part.splitlines() if not line.strip().startswith("--")).strip()
        if code:
            statements.append(part.strip())
    return statements


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"migration {path} is not named NNNN_lower_snake.sql")
        found.append((int(match.group(1)), path))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found


BOOKKEEPING = ("CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
               "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version")


def statements(sql: str, cluster: str | None = None) -> list[str]:
    """A migration's statements as run: as written, or rewritten for a cluster (store/cluster.py)."""
    return [out for statement in split_statements(sql) for out in
            ([statement] if cluster is None else for_cluster(statement, cluster))]


def migrate(client: Client, directory: Path = MIGRATIONS_DIR, cluster: str | None = None) -> list[str]:
    """Apply pending migrations in order; returns the names applied this time. ``cluster``
    (``AIMETER_CLICKHOUSE_CLUSTER``): the same files as ON CLUSTER DDL with Replicated and Distributed tables."""
    for statement in statements(BOOKKEEPING, cluster):
        client.command(statement)
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
    applied = []
    for version, path in migration_files(directory):
        if version in done:
            continue
        for statement in statements(path.read_text(encoding="utf-8"), cluster):
            client.command(statement)
        client.insert("schema_migrations", [[version, path.name]], column_names=["version", "name"])
        applied.append(path.name)
    return applied
