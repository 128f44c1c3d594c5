-- GPU cost as an effective-dated, append-only history (issue 14).
-- 1. When each self-hosted backend was first declared: no GPU cost period starts before it. Append-only;
--    read min(declared_at) per backend (a second insert for the same backend changes nothing).
CREATE TABLE IF NOT EXISTS gpu_backend_declarations
(
    backend LowCardinality(String),
    declared_at DateTime64(3, 'UTC'),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (backend, declared_at);

-- Backends declared before this migration: their first use (to the minute) stands in for the declaration,
-- or now if they were never used. The pricer then moves any period starting earlier (an undated period was
-- stored from 1970) to that moment.
INSERT INTO gpu_backend_declarations (backend, declared_at)
SELECT p.backend, if(u.backend = '', now64(3), toDateTime64(toStartOfMinute(u.first_use), 3, 'UTC'))
FROM (SELECT DISTINCT backend FROM gpu_cost_periods FINAL WHERE is_deleted = 0) AS p
LEFT JOIN (SELECT backend, min(started_at) AS first_use FROM usage_events FINAL
           WHERE deployment = 'self_hosted' GROUP BY backend) AS u ON p.backend = u.backend
WHERE p.backend NOT IN (SELECT backend FROM gpu_backend_declarations);

-- 2. Requests served at once: part of the cost model (GPU-seconds are shared by them), so it is versioned too.
ALTER TABLE gpu_cost_periods ADD COLUMN IF NOT EXISTS parallel_requests UInt32 DEFAULT 1;

-- 3. Every version of every period, forever: gpu_cost_periods FINAL keeps only the newest, and merges drop
--    the rest. A correction by `aimeter reprice` is a new version here; the as-charged one stays.
CREATE TABLE IF NOT EXISTS gpu_cost_period_versions
(
    backend LowCardinality(String),
    effective_from DateTime64(3, 'UTC'),
    effective_to Nullable(DateTime64(3, 'UTC')),
    gpu_type LowCardinality(String),
    gpu_count UInt32,
    usd_per_hour Decimal(38, 12),
    tokens_per_hour Decimal(38, 12),
    parallel_requests UInt32,
    version UInt64,
    is_deleted UInt8,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
-- One row per (period, version): a retried insert of the same version collapses under FINAL.
ORDER BY (backend, effective_from, version);

CREATE MATERIALIZED VIEW IF NOT EXISTS gpu_cost_period_versions_mv TO gpu_cost_period_versions AS
SELECT backend, effective_from, effective_to, gpu_type, gpu_count, usd_per_hour, tokens_per_hour, parallel_requests,
       version, is_deleted
FROM gpu_cost_periods;

INSERT INTO gpu_cost_period_versions (backend, effective_from, effective_to, gpu_type, gpu_count, usd_per_hour,
                                      tokens_per_hour, parallel_requests, version, is_deleted)
SELECT backend, effective_from, effective_to, gpu_type, gpu_count, usd_per_hour, tokens_per_hour, parallel_requests,
       version, is_deleted
FROM gpu_cost_periods;

-- 4. The allocation, billing only time that has passed. For every self-hosted backend, each stretch of a
-- period inside [since, least(until, now)) is cut at whole hours into segments; a segment costs
--     usd_per_hour x its length / 1 h          (so the current hour counts only its elapsed part)
-- and holds capacity tokens_per_hour x its length / 1 h. A group (team, project, user, model, provider) gets
--     segment cost x its tokens / max(capacity, tokens used in the segment)
-- rounded half-even to 12 places, and team = 'idle' (every label 'idle') the rest, so a segment's rows add up
-- exactly to its cost. A request belongs to the segment its started_at falls in. Same columns as before;
-- hour is the segment's hour, hour_cost_usd and capacity_tokens the segment's.
--   SELECT team, sum(cost_usd) FROM gpu_cost_allocation(since = '2026-11-01', until = '2026-12-01') GROUP BY team
CREATE OR REPLACE VIEW gpu_cost_allocation AS
WITH
    {since:DateTime64(3, 'UTC')} AS w_from,
    least({until:DateTime64(3, 'UTC')}, now64(3)) AS w_to,
    periods AS (
        SELECT backend, usd_per_hour AS hour_usd, tokens_per_hour AS hour_tokens,
               greatest(effective_from, w_from) AS p_from, least(ifNull(effective_to, w_to), w_to) AS p_to
        FROM gpu_cost_periods FINAL
        WHERE is_deleted = 0
    ),
    segments AS (
        SELECT backend, hour, greatest(hour, p_from) AS seg_from, least(hour + toIntervalHour(1), p_to) AS seg_to,
               dateDiff('millisecond', seg_from, seg_to) AS seg_ms,
               toDecimal128(roundBankers(toDecimal256(hour_usd, 24) * seg_ms / 3600000, 12), 12) AS seg_usd,
               toDecimal128(toDecimal256(hour_tokens, 12) * seg_ms / 3600000, 12) AS seg_tokens
        FROM (
            SELECT backend, hour_usd, hour_tokens, p_from, p_to,
                   toStartOfHour(p_from) + toIntervalHour(arrayJoin(range(toUInt64(
                       dateDiff('hour', toStartOfHour(p_from), p_to - toIntervalMillisecond(1)) + 1)))) AS hour
            FROM periods
            WHERE p_to > p_from
        )
    ),
    usage AS (
        SELECT s.backend AS backend, s.seg_from AS seg_from, e.team AS team, e.project AS project, e.user AS user,
               e.model AS model, e.provider AS provider, sum(e.tokens) AS tokens
        FROM (
            SELECT backend, started_at, toStartOfHour(started_at) AS e_hour, team, project, user,
                   if(model_served != '', model_served, model_requested) AS model, provider,
                   input_tokens + output_tokens AS tokens
            FROM usage_events FINAL
            WHERE deployment = 'self_hosted' AND started_at >= w_from AND started_at < w_to
        ) AS e
        INNER JOIN segments AS s ON e.backend = s.backend AND e.e_hour = s.hour
        WHERE e.started_at >= s.seg_from AND e.started_at < s.seg_to
        GROUP BY backend, seg_from, team, project, user, model, provider
    ),
    used AS (
        SELECT backend, seg_from, sum(tokens) AS used_tokens FROM usage GROUP BY backend, seg_from
    ),
    allocated AS (
        SELECT u.backend AS backend, s.hour AS hour, u.seg_from AS seg_from, u.team AS team, u.project AS project,
               u.user AS user, u.model AS model, u.provider AS provider, u.tokens AS tokens,
               s.seg_usd AS hour_cost_usd, s.seg_tokens AS capacity_tokens, d.used_tokens AS used_tokens,
               toDecimal128(roundBankers(
                   toDecimal256(s.seg_usd, 24) * u.tokens
                   / toDecimal256(greatest(s.seg_tokens, toDecimal128(d.used_tokens, 12)), 12), 12), 12) AS cost_usd
        FROM usage AS u
        INNER JOIN segments AS s ON u.backend = s.backend AND u.seg_from = s.seg_from
        INNER JOIN used AS d ON u.backend = d.backend AND u.seg_from = d.seg_from
    )
SELECT backend, hour, team, project, user, model, provider, 'self_hosted' AS deployment, tokens, hour_cost_usd,
       capacity_tokens, used_tokens, cost_usd
FROM allocated
UNION ALL
SELECT s.backend, s.hour, 'idle', 'idle', 'idle', 'idle', 'idle', 'self_hosted', toUInt64(0), s.seg_usd,
       s.seg_tokens, a.used_tokens, s.seg_usd - a.allocated_usd
FROM segments AS s
LEFT JOIN (
    SELECT backend, seg_from, any(used_tokens) AS used_tokens, sum(cost_usd) AS allocated_usd
    FROM allocated GROUP BY backend, seg_from
) AS a ON s.backend = a.backend AND s.seg_from = a.seg_from;
