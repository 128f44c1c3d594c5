-- The hourly rollup without the user and API key dimensions (issue 17): the month chargeback, the spend reports
-- and the dashboards' spend panels group and filter by team, project, model, backend, provider, deployment and
-- pricing status only, and usage_rollup's user and key columns multiply its rows (6.0M rows for 10M events in the
-- benchmark). The rollup job writes it in the same run and under the same version as usage_rollup, by summing
-- that version's 'cost' and 'gpu' rows of the hour (Decimal(38, 12) and UInt64: exact in any order), so an hour
-- that is clean in usage_rollup is clean here; readers that need a user or a key keep reading usage_rollup.
CREATE TABLE IF NOT EXISTS usage_rollup_teams
(
    hour DateTime('UTC'),
    version UInt64,
    source LowCardinality(String),
    team LowCardinality(String),
    project LowCardinality(String),
    model LowCardinality(String),
    backend LowCardinality(String),
    provider LowCardinality(String),
    deployment LowCardinality(String),
    pricing_status LowCardinality(String),
    requests UInt64,
    input_tokens UInt64,
    cache_read_input_tokens UInt64,
    cache_creation_input_tokens UInt64,
    output_tokens UInt64,
    reasoning_output_tokens UInt64,
    priced_requests UInt64,
    cost_usd Decimal(38, 12),
    proprietary_usd Decimal(38, 12),
    reference_usd Decimal(38, 12),
    gpu_usd Decimal(38, 12),
    unpriced_requests UInt64,
    cache_read_savings_usd Decimal(38, 12)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, version, source, team, project)
SETTINGS non_replicated_deduplication_window = 1000;

-- Hours computed before this table existed have no rows in it: dirty again until the job recomputes them.
INSERT INTO rollup_marks (hour, marked_at)
SELECT DISTINCT hour, now64(6) FROM usage_rollup;
