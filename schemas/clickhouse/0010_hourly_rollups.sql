-- Exact hourly rollups (issue 17). An insert-time materialized view that summed rows would double-count
-- redelivered duplicates and re-rated versions, so the views below only mark the hours an insert touched as
-- dirty; the rollup job (aimeter.reports.rollup) recomputes dirty hours from FINAL and writes them with a
-- new version, and readers take the rollup only for hours that are clean (computed after their newest mark),
-- raw rows with FINAL for the rest: every answer equals FINAL over raw rows at every moment.

-- 1. Dirty marks: one row per (hour, insert); the newest mark per hour is what counts.
CREATE TABLE IF NOT EXISTS rollup_marks
(
    hour DateTime('UTC'),
    marked_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(marked_at)
ORDER BY hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_marks_costs_mv TO rollup_marks AS
SELECT DISTINCT toStartOfHour(started_at) AS hour, now64(6) AS marked_at FROM usage_costs;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_marks_events_mv TO rollup_marks AS
SELECT DISTINCT toStartOfHour(started_at) AS hour, now64(6) AS marked_at FROM usage_events;

-- A GPU period version (a change, a correction or a tombstone) can move the cost of every hour from its start
-- until now: the old and the new version of a period share effective_from, so [effective_from, now) covers both.
CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_marks_gpu_mv TO rollup_marks AS
SELECT toStartOfHour(effective_from) + toIntervalHour(arrayJoin(range(toUInt64(greatest(0,
           dateDiff('hour', toStartOfHour(effective_from), now64(3)) + 1))))) AS hour,
       now64(6) AS marked_at
FROM gpu_cost_periods;

-- Rows written before this migration: every hour that holds one is dirty until the job has computed it.
INSERT INTO rollup_marks (hour, marked_at)
SELECT DISTINCT toStartOfHour(started_at), now64(6) FROM usage_costs;
INSERT INTO rollup_marks (hour, marked_at)
SELECT DISTINCT toStartOfHour(started_at), now64(6) FROM usage_events;
INSERT INTO rollup_marks (hour, marked_at)
SELECT toStartOfHour(effective_from) + toIntervalHour(arrayJoin(range(toUInt64(greatest(0,
           dateDiff('hour', toStartOfHour(effective_from), now64(3)) + 1))))), now64(6)
FROM gpu_cost_periods;

-- 2. What the job computed: per hour and version, the newest mark it had seen before reading FINAL.
CREATE TABLE IF NOT EXISTS rollup_hours
(
    hour DateTime('UTC'),
    version UInt64,
    covered_mark DateTime64(6, 'UTC'),
    computed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY hour;

-- 3. The rollup rows of one (hour, version). source 'cost': usage_costs FINAL (one row per group of the
-- dimensions below); 'gpu': gpu_cost_allocation (api_key_id and pricing_status ''); 'events': usage_events FINAL
-- (requests only, per hour). Sums are exact: Decimal(38, 12) and UInt64; cost_usd sums the priced rows only and
-- priced_requests counts them, so a group with none reads NULL, never $0.
CREATE TABLE IF NOT EXISTS usage_rollup
(
    hour DateTime('UTC'),
    version UInt64,
    source LowCardinality(String),
    team LowCardinality(String),
    project LowCardinality(String),
    user String,
    api_key_id String,
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
-- Hour first (every reader filters an hour range), then the version the hour's state points at.
ORDER BY (hour, version, source, team, project)
SETTINGS non_replicated_deduplication_window = 1000;

-- 4. Hours whose rollup is exact now: computed (some version) after the newest mark of the hour.
CREATE VIEW IF NOT EXISTS rollup_clean_hours AS
SELECT h AS hour, max(v) AS version
FROM (
    SELECT hour AS h, version AS v, covered_mark AS covered, toDateTime64(0, 6, 'UTC') AS marked FROM rollup_hours
    UNION ALL
    SELECT hour, toUInt64(0), toDateTime64(0, 6, 'UTC'), marked_at FROM rollup_marks
)
GROUP BY h
HAVING max(v) > 0 AND argMax(covered, v) >= max(marked);
