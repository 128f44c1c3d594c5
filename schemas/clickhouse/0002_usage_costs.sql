-- Priced ledger: what each event cost, denormalized with its attribution and tokens so reports need no join.
-- Money is Decimal(38, 12), never Float. rating_version 0 is the price charged at ingest; a re-rating inserts
-- a higher version, and ReplacingMergeTree(rating_version) keeps the newest per event under FINAL.
CREATE TABLE IF NOT EXISTS usage_costs
(
    event_id UUID,
    started_at DateTime64(3, 'UTC'),
    ended_at DateTime64(3, 'UTC'),
    api LowCardinality(String),
    backend LowCardinality(String),
    provider LowCardinality(String),
    deployment LowCardinality(String),
    model LowCardinality(String),
    status LowCardinality(String),
    stream Bool,
    team LowCardinality(String),
    project LowCardinality(String),
    user String,
    api_key_id String,
    input_tokens UInt64,
    cache_read_input_tokens UInt64,
    cache_creation_input_tokens UInt64,
    output_tokens UInt64,
    reasoning_output_tokens UInt64,
    cost_usd Nullable(Decimal(38, 12)),
    input_cost_usd Nullable(Decimal(38, 12)),
    output_cost_usd Nullable(Decimal(38, 12)),
    reference_cost_usd Nullable(Decimal(38, 12)),
    pricing_status LowCardinality(String),
    pricing_note String,
    price_source LowCardinality(String),
    price_version LowCardinality(String),
    rating_version UInt64,
    priced_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(rating_version)
PARTITION BY toYYYYMM(started_at)
-- Same key as usage_events: time-range scans first, team for chargeback, event_id so versions of one event meet.
ORDER BY (toDate(started_at), team, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
