-- Hourly rollup of the Gateway operations panels (issue 17), written by the same rollup job and under the same
-- versions and clean-hour rule as usage_rollup (0010): the job recomputes an hour's rows from usage_events FINAL,
-- so a redelivered attempt counts once. Counts and token sums are exact. Latency, time to first token and
-- pipeline lag are quantilesBFloat16 states: a histogram of the values rounded to bfloat16 (8 significant
-- bits, so a quantile is at most 1/128 below the true value), whose merge adds counts - the panels therefore
-- give exactly what quantilesBFloat16 over the raw rows with FINAL gives, for any range of hours.
CREATE TABLE IF NOT EXISTS ops_rollup
(
    hour DateTime('UTC'),
    version UInt64,
    team LowCardinality(String),
    project LowCardinality(String),
    backend LowCardinality(String),
    model LowCardinality(String),
    deployment LowCardinality(String),
    status LowCardinality(String),
    http_status UInt16,
    stream Bool,
    attempts UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    latency_ms AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    timed_streams UInt64,
    ttft_ms AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    lag_s AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    max_lag_s Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, version, team, project, model)
SETTINGS non_replicated_deduplication_window = 1000;

-- The same per hour, status, HTTP status and stream only, summed (and states merged: exact) from ops_rollup's rows
-- of the same version in the same run: what a panel reads when every dashboard variable is All (the default),
-- a few rows per hour instead of one per team, project, model and backend.
CREATE TABLE IF NOT EXISTS ops_rollup_all
(
    hour DateTime('UTC'),
    version UInt64,
    status LowCardinality(String),
    http_status UInt16,
    stream Bool,
    attempts UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    latency_ms AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    timed_streams UInt64,
    ttft_ms AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    lag_s AggregateFunction(quantilesBFloat16(0.5, 0.95, 0.99), Float64),
    max_lag_s Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, version, status)
SETTINGS non_replicated_deduplication_window = 1000;

-- Hours the job computed before this table existed have no rows in it: every hour holding an event is dirty
-- again until the job has computed it (reports read its raw rows meanwhile, still exact).
INSERT INTO rollup_marks (hour, marked_at)
SELECT DISTINCT toStartOfHour(started_at), now64(6) FROM usage_events;
