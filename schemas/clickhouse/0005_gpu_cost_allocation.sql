-- Fully loaded self-hosted cost (issue 4). The pricer copies each self-hosted backend's GPU cost periods
-- from its config into gpu_cost_periods at start (and `aimeter reprice` does too), writing only what
-- changed: a new version of a period, or a tombstone (is_deleted = 1) for one the config no longer has.
-- Periods start and end on whole hours; effective_to is exclusive, NULL while the period is in force.
CREATE TABLE IF NOT EXISTS gpu_cost_periods
(
    backend LowCardinality(String),
    effective_from DateTime64(3, 'UTC'),
    effective_to Nullable(DateTime64(3, 'UTC')),
    gpu_type LowCardinality(String),
    gpu_count UInt32,
    usd_per_hour Decimal(38, 12),
    tokens_per_hour Decimal(38, 12),
    version UInt64,
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
-- A period is identified by its backend and start; newer versions of the same period replace older ones.
ORDER BY (backend, effective_from);

-- For every self-hosted backend and every hour starting in [since, until), the hour's whole GPU cost
-- allocated to who used it. A group (team, project, user, model, provider) gets
--     hour cost x its tokens / max(capacity tokens, tokens used that hour)
-- rounded half-even to 12 places, and the row team = 'idle' (every label 'idle') gets the rest:
--     hour cost x (1 - used / capacity), plus the sub-picodollar rounding remainder,
-- so an hour's rows add up exactly to its cost. An hour used beyond the declared capacity has no idle
-- share: its cost is split by token share. Tokens are input + output tokens, as in the throughput price.
-- Reads usage_events FINAL and gpu_cost_periods FINAL: exact under redelivery.
--   SELECT team, sum(cost_usd) FROM gpu_cost_allocation(since = '2026-11-01', until = '2026-12-01') GROUP BY team
CREATE VIEW IF NOT EXISTS gpu_cost_allocation AS
WITH
    toStartOfHour({since:DateTime64(3, 'UTC')}) AS first_hour,
    toStartOfHour({until:DateTime64(3, 'UTC')} - toIntervalMillisecond(1)) + toIntervalHour(1) AS end_hour,
    hours AS (
        SELECT p.backend AS backend, w.hour AS hour, p.usd_per_hour AS hour_cost_usd,
               p.tokens_per_hour AS capacity_tokens
        FROM (
            SELECT first_hour + toIntervalHour(number) AS hour
            FROM numbers(toUInt64(greatest(0, dateDiff('hour', first_hour, end_hour))))
        ) AS w
        CROSS JOIN (SELECT * FROM gpu_cost_periods FINAL WHERE is_deleted = 0) AS p
        WHERE w.hour >= p.effective_from AND (p.effective_to IS NULL OR w.hour < p.effective_to)
    ),
    usage AS (
        SELECT backend, toStartOfHour(started_at) AS hour, team, project, user,
               if(model_served != '', model_served, model_requested) AS model, provider,
               sum(input_tokens + output_tokens) AS tokens
        FROM usage_events FINAL
        WHERE deployment = 'self_hosted' AND started_at >= first_hour AND started_at < end_hour
        GROUP BY backend, hour, team, project, user, model, provider
    ),
    used AS (
        SELECT backend, hour, sum(tokens) AS used_tokens FROM usage GROUP BY backend, hour
    ),
    allocated AS (
        SELECT u.backend AS backend, u.hour AS hour, u.team AS team, u.project AS project, u.user AS user,
               u.model AS model, u.provider AS provider, u.tokens AS tokens, h.hour_cost_usd AS hour_cost_usd,
               h.capacity_tokens AS capacity_tokens, d.used_tokens AS used_tokens,
               toDecimal128(roundBankers(
                   toDecimal256(h.hour_cost_usd, 24) * u.tokens
                   / toDecimal256(greatest(h.capacity_tokens, toDecimal128(d.used_tokens, 12)), 12), 12), 12) AS cost_usd
        FROM usage AS u
        INNER JOIN hours AS h ON u.backend = h.backend AND u.hour = h.hour
        INNER JOIN used AS d ON u.backend = d.backend AND u.hour = d.hour
    )
SELECT backend, hour, team, project, user, model, provider, 'self_hosted' AS deployment, tokens, hour_cost_usd,
       capacity_tokens, used_tokens, cost_usd
FROM allocated
UNION ALL
SELECT h.backend, h.hour, 'idle', 'idle', 'idle', 'idle', 'idle', 'self_hosted', toUInt64(0), h.hour_cost_usd,
       h.capacity_tokens, a.used_tokens, h.hour_cost_usd - a.allocated_usd
FROM hours AS h
LEFT JOIN (
    SELECT backend, hour, any(used_tokens) AS used_tokens, sum(cost_usd) AS allocated_usd
    FROM allocated GROUP BY backend, hour
) AS a ON h.backend = a.backend AND h.hour = a.hour;
