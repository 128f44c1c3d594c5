-- What `aimeter reconcile --provider openai|anthropic` found (issue 19): the provider's own usage and cost
-- reports against the ledger, one row per kind (usage: bucket x model x scope; cost: day x model x scope) with
-- both sides' figures, the drift class and its explanation. scope is the OpenAI project or Anthropic workspace
-- id ('*': not split, '': the default); model '*' on OpenAI cost rows (its cost report has no model split).
-- provider_* figures are NULL where the provider does not report them (Anthropic counts no requests).
-- A re-run over the same window replaces its rows (ReplacingMergeTree(run_at), read with FINAL); no secret is
-- ever stored here, only ids the provider itself reports.
CREATE TABLE IF NOT EXISTS provider_reconciliation
(
    provider LowCardinality(String),
    kind LowCardinality(String),
    bucket_width LowCardinality(String),
    bucket_start DateTime('UTC'),
    model String,
    scope String,
    provider_input_tokens UInt64,
    ledger_input_tokens UInt64,
    provider_cache_read_tokens UInt64,
    ledger_cache_read_tokens UInt64,
    provider_cache_write_tokens UInt64,
    ledger_cache_write_tokens UInt64,
    provider_output_tokens UInt64,
    ledger_output_tokens UInt64,
    provider_requests Nullable(UInt64),
    ledger_requests UInt64,
    ledger_unread_requests UInt64,
    ledger_unpriced_requests UInt64,
    provider_usd Nullable(Decimal(38, 12)),
    ledger_usd Nullable(Decimal(38, 12)),
    classification LowCardinality(String),
    explanation String,
    beyond_tolerance UInt8,
    run_id UUID,
    run_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(run_at)
PARTITION BY toYYYYMM(bucket_start)
-- One row per provider, kind, bucket and group: the newest run's verdict wins.
ORDER BY (provider, kind, bucket_width, bucket_start, scope, model);
