"""The one settings object per process (env prefix ``AIMETER_``), validated at start.

Every bad setting is reported at once, so an operator fixes a deployment in one pass.
"""

from __future__ import annotations

import hashlib
import re
import socket
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """All invalid settings, one line each, naming the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIMETER_", extra="ignore")

    config: Path | None = Field(None, description="Gateway/pricer YAML config (backends, models).")
    data_dir: Path = Field(Path(".aimeter"), description="Local state: Kafka data, chDB, spool.")
    kafka_bootstrap: str | None = Field(None, description="Use this Kafka cluster; start no broker.")
    kafka_port: int = Field(9092, ge=1, le=65535)
    clickhouse_url: str | None = Field(None, description="chdb:///path (embedded) or http(s)://host:8123.")
    clickhouse_user: str | None = Field(None, description="ClickHouse server only: user (overrides the URL's).")
    clickhouse_password: SecretStr | None = Field(
        None, description="ClickHouse server only: password, any characters (overrides the URL's).")
    clickhouse_password_file: Path | None = Field(
        None, description="ClickHouse server only: file holding the password (trailing newline ignored).")
    clickhouse_cluster: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="ClickHouse server only: run migrations ON CLUSTER this cluster, with Replicated* tables and "
                    "Distributed tables over them (see the README's Scale section).")
    query_port: int = Field(8124, ge=1, le=65535, description="Embedded mode: read-only query endpoint.")
    query_max_execution_s: int = Field(120, ge=1, description="Query endpoint: longest a query may run.")
    query_max_memory_bytes: int = Field(2**30, ge=16 * 2**20, description="Query endpoint: memory per query.")
    query_max_result_bytes: int = Field(256 * 2**20, ge=2**20, description="Query endpoint: largest result.")
    query_max_concurrent: int = Field(4, ge=1, le=64, description="Query endpoint: queries run at once.")
    rollup_interval_s: float = Field(
        60.0, ge=0, description="The pricer recomputes the hourly rollups' dirty whole hours this often, off its "
                                "insert path; 0: never (reports then read those hours' raw rows, still exact).")
    raw_retention_days: int = Field(
        0, ge=0, description="TTL of raw ledger rows (usage_events, usage_costs, usage_cost_versions) in days; the "
                             "hourly rollups keep everything. 0 (default): kept forever, because re-rating and GPU "
                             "history corrections recompute from raw rows.")
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=1, le=65535)
    gateway_id: str = Field(
        "", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$",
        description="This gateway replica's name: its journal, spool and reconciliation counts (ai.counts.v1) "
                    "are keyed by it, so it must be unique per data dir and stable across restarts. Default: "
                    "<hostname>-<8 hex of the data dir's absolute path>.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    upstream_timeout_s: float = Field(600.0, gt=0)
    upstream_max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=64 * 1024,
        description="Most bytes of one upstream answer held or decompressed (a whole answer, a gzip body, one "
                    "stream event); beyond it the client gets 502 and the event says why.")
    gateway_head_timeout_s: float = Field(
        10.0, gt=0, description="A request head (or a new connection's first one) must arrive within this; else 408.")
    gateway_body_timeout_s: float = Field(
        60.0, gt=0, description="A request body must arrive within this of its head; else 408 and close.")
    gateway_max_connections_per_peer: int = Field(
        1024, ge=0, description="Open connections one client IP may hold; more are answered 503 and closed. "
                                "0: no cap (behind a load balancer all clients share its address).")
    max_concurrent_per_key: int = Field(
        512, ge=0, description="Requests one gateway key may have in flight; more get 429. 0: no limit. Half the "
                               "upstream pool's 1024 connections per origin, so one key never holds all of them.")
    auth: Literal["keys", "none"] = Field(
        "keys", description="keys: every request needs a gateway-issued key; none: local/dev, team from headers.")
    keys_file: Path | None = Field(
        None, description="AIMETER_KEYS_STORE=file: the key store; kafka: what `aimeter keys import` reads by "
                          "default. Default <data dir>/keys.json.")
    keys_store: Literal["kafka", "file"] = Field(
        "kafka", description="kafka (default): gateway keys live in the compacted topic ai.keys.v1 on "
                             "AIMETER_KAFKA_BOOTSTRAP (or the local broker), shared by every gateway; file: "
                             "the JSON file AIMETER_KEYS_FILE only (one host, or a shared volume).")
    keys_start_wait_s: float = Field(
        5.0, ge=0, description="Gateway start: how long to wait for the keys topic to be read to its end before "
                               "serving from <data dir>/keys.snapshot.json instead.")
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of ai.usage.v1 and its dead letters when this process creates them; an "
                             "existing topic is left as it is. One pricer consumes at most one partition's share.")
    topic_replication_factor: int = Field(
        -1, ge=-1, description="Replicas of every topic this process creates; -1: the broker's default "
                               "(default.replication.factor). A cluster: 3, with min.insync.replicas=2.")
    kafka_delivery_timeout_s: float = Field(30.0, gt=0, description="Undelivered after this: spooled to disk.")
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    spool_dir: Path | None = Field(
        None, description="The gateway's journal and spool; default <data dir>/spool. Its own filesystem "
                          "keeps a full disk there from reaching the rest of the data dir.")
    journal_segment_bytes: int = Field(
        8 * 1024 * 1024, ge=64 * 1024, description="Journal segment size, allocated ahead of need (two at most).")
    spool_full_policy: Literal["open", "closed"] = Field(
        "open", description="open: keep serving and count events that could not be kept; closed: answer 503, "
                            "before forwarding, while the journal has no room for the next event.")
    demo_upstream_port: int = Field(8090, ge=1, le=65535, description="`aimeter up --demo`: the fake upstream's port.")
    metrics_token_file: Path | None = Field(
        None, description="Bearer token for /metrics (gateway and pricer); default <data dir>/metrics_token, "
                          "created 0600 on first start.")
    pricer_metrics_port: int = Field(
        8126, ge=0, le=65535, description="The pricer's /metrics, on 127.0.0.1 only; 0: not served.")
    otel_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318): a span and GenAI metrics per "
                          "gateway request. Unset: no OpenTelemetry at all.")
    pricer_group: str = "aimeter-pricer"
    fault_insert_fail_file: Path | None = Field(
        None, description="Tests only: while this file exists, the pricer's ClickHouse inserts fail.")
    pricer_batch_max: int = Field(
        20_000, ge=1, description="Most events per poll and insert; bigger batches: fewer, cheaper parts.")
    # `aimeter alerts` (and `aimeter up` starts it when the URL is set): soft-budget thresholds and spend spikes.
    alerts_webhook_url: str | None = Field(
        None, pattern=r"^https?://", description="Slack-compatible webhook the alerts post to; unset: no alerts.")
    alerts_thresholds_pct: str = Field(
        "50,80,100", pattern=r"^\s*\d{1,4}(\s*,\s*\d{1,4})*\s*$",
        description="A soft budget's thresholds, % of its amount, comma-separated; each fires once per period.")
    alerts_spike_factor: Decimal = Field(
        Decimal(3), gt=0, description="Spike: an hour's spend above this many times the trailing mean.")
    alerts_spike_floor_usd: Decimal = Field(
        Decimal(10), ge=0, description="Spike: an hour below this many USD never counts as a spike.")
    alerts_spike_trailing_hours: int = Field(24, ge=1, le=24 * 14, description="Spike: hours the mean is taken over.")
    alerts_spike_grace_s: float = Field(
        300.0, ge=0, description="Spike: an hour is judged this long after it ended, once late events are in.")
    alerts_recount_s: float = Field(
        3600.0, ge=60, description="At start, ledger rows this recent are counted one by one (so their Kafka "
                                   "copies are not counted twice); older ones as totals.")
    alerts_group: str = Field("aimeter-alerts", description="The alerts consumer's Kafka consumer group.")

    @field_validator("clickhouse_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in {"chdb", "http", "https"}:
            raise ValueError(f"scheme must be chdb://, http:// or https://, got {value!r}")
        return value

    @field_validator("clickhouse_password_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _default_gateway_id(self) -> Settings:
        """Unique per host and data dir without configuration, and the same after a restart: replicas on
        several hosts (or two on one host with their own data dirs) never share a counts key."""
        if not self.gateway_id:
            where = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
            host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "gateway"
            self.gateway_id = f"{host}-{where}"
        return self

    @property
    def resolved_spool_dir(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def resolved_metrics_token_file(self) -> Path:
        return self.metrics_token_file or self.data_dir / "metrics_token"

    @property
    def resolved_keys_file(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def resolved_clickhouse_url(self) -> str:
        """Embedded chDB under the data dir unless a URL is configured."""
        if self.clickhouse_url is None:
            return f"chdb://{(self.data_dir / 'chdb').resolve()}"
        from aimeter.store.client import with_credentials  # noqa: PLC0415 - keep settings import light

        password = self.clickhouse_password.get_secret_value() if self.clickhouse_password else None
        if self.clickhouse_password_file is not None:
            password = self.clickhouse_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        # With a user or password set, the URL carries them percent-encoded: never log it (store.client.redact).
        return with_credentials(self.clickhouse_url, self.clickhouse_user, password)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from env plus explicit overrides; raise one SettingsError listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"AIMETER_{str(err['loc'][0]).upper()}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
