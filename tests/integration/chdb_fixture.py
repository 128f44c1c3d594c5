"""One embedded ClickHouse engine (chDB) for every in-process test of the session.

chDB binds a process to one data directory ("EmbeddedServer already initialized with path …,
cannot connect with different path") and a directory to one process. So every test that talks
to ClickHouse *in the pytest process* uses this session's directory (``chdb_path``), through
``chdb_client`` or an endpoint serving that path, and creates only its own tables or rows.
A test that runs ClickHouse in a subprocess gives it another directory: this one is locked by
the pytest process (which is also how the "store is busy" errors are tested).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from aimeter.events import UsageEvent
from aimeter.pricer.pricebook import PriceBook
from aimeter.pricer.rows import COST_COLUMNS, EVENT_COLUMNS, build_batch
from aimeter.store.migrations import migrate
from tests.support.pricer_rows import cost_rows, event_rows


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb-session") / "chdb"


@pytest.fixture(scope="session")
def chdb_client(chdb_path: Path) -> Iterator[Client]:
    """The session's engine; other in-process clients and endpoints must use ``chdb_path`` too."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def metering_store(chdb_client: Client) -> Client:
    """The session's engine with the project's schema (every numbered migration) applied."""
    migrate(chdb_client)
    return chdb_client


def ingest(client: Client, events: Iterable[UsageEvent], book: PriceBook,
           priced_at: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
    """Store events exactly as the pricer does: parse the wire JSON, price, insert usage then costs."""
    batch = build_batch([e.model_dump_json().encode() for e in events], book, priced_at)
    assert not batch.poison, batch.poison
    client.insert("usage_events", event_rows(batch), column_names=EVENT_COLUMNS)
    client.insert("usage_costs", cost_rows(batch), column_names=COST_COLUMNS)
