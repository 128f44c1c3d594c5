-- Immutable usage ledger: one row per upstream attempt, exactly as the gateway reported it.
-- Redelivered events collapse on the sorting key (it ends in event_id); query with FINAL for exact counts.
-- non_replicated_deduplication_window lets a retried batch with the same insert_deduplication_token be skipped.
CREATE TABLE IF NOT EXISTS usage_events
(
    event_id UUID,
    gateway_id LowCardinality(String),
    started_at DateTime64(3, 'UTC'),
    first_token_at Nullable(DateTime64(3, 'UTC')),
    ended_at DateTime64(3, 'UTC'),
    api LowCardinality(String),
    backend LowCardinality(String),
    provider LowCardinality(String),
    deployment LowCardinality(String),
    model_requested LowCardinality(String),
    model_served LowCardinality(String),
    stream Bool,
    status LowCardinality(String),
    http_status UInt16,
    usage_source LowCardinality(String),
    input_tokens UInt64,
    cache_read_input_tokens UInt64,
    cache_creation_input_tokens UInt64,
    cache_creation_5m_input_tokens UInt64,
    cache_creation_1h_input_tokens UInt64,
    input_audio_tokens UInt64,
    input_image_tokens UInt64,
    output_tokens UInt64,
    reasoning_output_tokens UInt64,
    output_audio_tokens UInt64,
    output_image_tokens UInt64,
    backend_compute_seconds Nullable(Float64),
    team LowCardinality(String),
    project LowCardinality(String),
    user String,
    api_key_id String,
    tags Map(String, String),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
-- Day first because every report filters a time range, team next for chargeback, event_id last so duplicates collapse.
ORDER BY (toDate(started_at), team, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
