"""Cluster mode (``AIMETER_CLICKHOUSE_CLUSTER=name``): the same numbered migrations, rewritten for a cluster (pure).

Each table becomes two: ``<name>_local`` on every node (``ON CLUSTER``, the ``Replicated*`` form of its engine,
replica path ``/clickhouse/tables/{shard}/{database}/<name>_local``) and ``<name>``, a ``Distributed`` table over
them, so every reader and writer keeps using the names it knows. The ledger tables (their sorting key holds
``event_id``) are sharded by ``cityHash64(event_id)``: a redelivered event and every re-rated version of it land on
one shard, where ``FINAL`` collapses them, so ``FINAL`` through the Distributed table stays exact. Other tables
are sharded by their first sorting column. Materialized views fire on the local tables (an insert into a
Distributed table reaches them there) and write to the local target; plain views read the Distributed names.
``ALTER`` statements run on both tables; ``INSERT`` statements (backfills) run once, through the Distributed table.

Checked here with the engine's own parser only (``formatQuery`` on chDB, tests/unit/test_cluster_ddl.py): no
ClickHouse server or Keeper runs on this machine, so the DDL was never executed on a cluster.
"""

from __future__ import annotations

import re

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CREATE_TABLE = re.compile(rf"^(CREATE TABLE IF NOT EXISTS) ({_NAME})\b(.*?)\bENGINE = (\w+)(\(([^)]*)\))?(.*)$",
                           re.DOTALL)
_CREATE_MV = re.compile(rf"^(CREATE MATERIALIZED VIEW IF NOT EXISTS) ({_NAME}) TO ({_NAME}) AS(.*)$", re.DOTALL)
_CREATE_VIEW = re.compile(rf"^(CREATE (?:OR REPLACE )?VIEW(?: IF NOT EXISTS)?) ({_NAME})\b(.*)$", re.DOTALL)
_ALTER = re.compile(rf"^ALTER TABLE ({_NAME})\b(.*)$", re.DOTALL)
_ORDER_BY = re.compile(r"\bORDER BY ([^\n;]*?)(?:\s+SETTINGS\b|$)", re.MULTILINE)
_FROM = re.compile(rf"\bFROM ({_NAME})\b")


def _code(statement: str) -> str:
    """The statement without its comment lines (migrations comment their DDL line by line)."""
    return "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()


def local(name: str) -> str:
    return f"{name}_local"


def _top_level(key: str) -> list[str]:
    """``(a, f(b, c), d)`` -> ``['a', 'f(b, c)', 'd']``."""
    if key.startswith("(") and key.endswith(")"):
        key = key[1:-1]
    parts, depth, current = [], 0, ""
    for char in key:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def shard_key(tail: str) -> str:
    """Ledger tables by event id (duplicates and versions meet on one shard), others by their first key column."""
    match = _ORDER_BY.search(tail)
    columns = _top_level(match.group(1).strip()) if match else []
    if "event_id" in columns:
        return "cityHash64(event_id)"
    return f"cityHash64({columns[0]})" if columns and columns[0] else "rand()"


def for_cluster(statement: str, cluster: str) -> list[str]:
    """One migration statement as the statements a cluster runs, in order."""
    sql = _code(statement)
    on = f"ON CLUSTER {cluster}"
    if match := _CREATE_TABLE.match(sql):
        create, name, columns, engine, _args, args, tail = match.groups()
        path = f"'/clickhouse/tables/{{shard}}/{{database}}/{local(name)}', '{{replica}}'"
        replicated = f"Replicated{engine}({path}{', ' + args if args else ''})"
        return [f"{create} {local(name)} {on}{columns}ENGINE = {replicated}{tail}",
                f"{create} {name} {on} AS {local(name)} "
                f"ENGINE = Distributed({cluster}, currentDatabase(), {local(name)}, {shard_key(tail)})"]
    if match := _CREATE_MV.match(sql):
        create, name, target, select = match.groups()
        select = _FROM.sub(lambda m: f"FROM {local(m.group(1))}", select, count=1)
        return [f"{create} {name} {on} TO {local(target)} AS{select}"]
    if match := _CREATE_VIEW.match(sql):
        create, name, rest = match.groups()
        return [f"{create} {name} {on}{rest}"]
    if match := _ALTER.match(sql):
        name, rest = match.groups()
        if "MODIFY TTL" in rest:  # a TTL belongs to the table that holds the rows
            return [f"ALTER TABLE {local(name)} {on}{rest}"]
        return [f"ALTER TABLE {local(name)} {on}{rest}", f"ALTER TABLE {name} {on}{rest}"]
    return [sql]
