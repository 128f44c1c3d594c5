"""Shared fixtures: one Kafka for the whole session (see tests/fixtures/kafka.py), and one embedded
ClickHouse directory for every in-process ClickHouse test (see tests/integration/chdb_fixture.py)."""

pytest_plugins = ["tests.fixtures.kafka", "tests.integration.chdb_fixture"]
