"""A running stack for end-to-end tests: fake upstream, pricer and gateway as real processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pytest

from aimeter.gateway.keys import new_key
from aimeter.gateway.keys_kafka import KeysTopic
from aimeter.local.kafka import free_port
from aimeter.local.stack import Stack
from aimeter.settings import Settings
from aimeter.store.client import query_endpoint_client
from tests.support.stack import CONFIG

# Keys issued before the gateway starts: (team, project) -> key. Tests look theirs up with key_for().
TEAM_PROJECTS = [("search", "ranking"), ("research", "evals"), ("support", "helpdesk-bot"),
                 ("finance-cli-test", ""), ("keys-test", ""), ("metrics-probe", "helpdesk-bot")]


def issue_keys(bootstrap: str) -> dict[tuple[str, str], str]:
    """Written to the keys topic, as `aimeter keys create` does; the gateway reads it to its end before serving."""
    records, keys = [], {}
    for team, project in TEAM_PROJECTS:
        keys[team, project], record = new_key(team, project, "", datetime.now(UTC))
        records.append(record)
    KeysTopic(bootstrap).put(records)
    return keys


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("stack")
    upstream_port = free_port()
    config = data / "config.yaml"
    config.write_text(CONFIG.format(port=upstream_port), encoding="utf-8")
    settings = Settings(data_dir=data, kafka_bootstrap=kafka_bootstrap, gateway_port=free_port(),
                        query_port=free_port(), pricer_group=f"pricer-{uuid.uuid4().hex[:8]}",
                        pricer_metrics_port=free_port(),
                        config=config, max_body_bytes=1024 * 1024)
    running = Stack(settings, Path(config), fake_upstream_port=upstream_port)
    running.keys = issue_keys(kafka_bootstrap)  # type: ignore[attr-defined]
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def clickhouse(stack: Stack) -> clickhouse_connect.driver.client.Client:
    """Reads go through the pricer's read-only ClickHouse HTTP endpoint, as any report client would."""
    return query_endpoint_client(stack.settings.resolved_clickhouse_url, stack.settings.query_port)
