"""Shared fixtures: one Kafka for the whole session (see tests/fixtures/kafka.py)."""

pytest_plugins = ["tests.fixtures.kafka"]
