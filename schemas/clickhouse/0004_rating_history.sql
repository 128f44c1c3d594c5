-- Re-rating keeps two ledgers (issue 4). usage_costs answers "what does it cost now": FINAL keeps the
-- highest rating_version per event, and merges eventually drop the older versions. This table keeps every
-- version forever (copied by the materialized view below on each insert into usage_costs), so the
-- as-charged cost (version 0) and every correction stay queryable. Key ends in (event_id, rating_version):
-- a redelivered or retried insert collapses under FINAL, so totals stay exact.
CREATE TABLE IF NOT EXISTS usage_cost_versions
(
    event_id UUID,
    started_at DateTime64(3, 'UTC'),
    team LowCardinality(String),
    project LowCardinality(String),
    user String,
    model LowCardinality(String),
    backend LowCardinality(String),
    provider LowCardinality(String),
    deployment LowCardinality(String),
    rating_version UInt64,
    cost_usd Nullable(Decimal(38, 12)),
    reference_cost_usd Nullable(Decimal(38, 12)),
    pricing_status LowCardinality(String),
    price_source LowCardinality(String),
    price_version LowCardinality(String),
    priced_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(priced_at)
PARTITION BY toYYYYMM(started_at)
-- Time range first, team for corrections per team, then (event_id, rating_version) so each version is one row.
ORDER BY (toDate(started_at), team, event_id, rating_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_cost_versions_mv TO usage_cost_versions AS
SELECT event_id, started_at, team, project, user, model, backend, provider, deployment, rating_version, cost_usd,
       reference_cost_usd, pricing_status, price_source, price_version, priced_at
FROM usage_costs;

-- Rows priced before this migration (re-running it only adds duplicates that FINAL collapses).
INSERT INTO usage_cost_versions
SELECT event_id, started_at, team, project, user, model, backend, provider, deployment, rating_version, cost_usd,
       reference_cost_usd, pricing_status, price_source, price_version, priced_at
FROM usage_costs;

-- One row per `aimeter reprice` run that wrote something: what it covered and what it changed.
CREATE TABLE IF NOT EXISTS rating_runs
(
    rating_version UInt64,
    since DateTime64(3, 'UTC'),
    until DateTime64(3, 'UTC'),
    started_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC'),
    events UInt64,
    changed UInt64,
    before_cost_usd Decimal(38, 12),
    after_cost_usd Decimal(38, 12),
    price_version String
)
ENGINE = ReplacingMergeTree
-- One row per run, looked up by version; a retried write of the same run collapses.
ORDER BY rating_version;

-- Every re-rated event: what it was charged (version 0) and what it costs now (latest version).
-- An unpriced side counts as $0 in correction_usd; the statuses say which side was unpriced.
-- Filter on started_at and the other grouping columns: they are pushed down to the table.
CREATE VIEW IF NOT EXISTS cost_corrections AS
SELECT
    event_id, started_at, team, project, user, model, backend, provider, deployment,
    argMin(tuple(cost_usd), rating_version).1 AS charged_cost_usd,
    argMax(tuple(cost_usd), rating_version).1 AS current_cost_usd,
    ifNull(current_cost_usd, toDecimal128(0, 12)) - ifNull(charged_cost_usd, toDecimal128(0, 12)) AS correction_usd,
    argMin(pricing_status, rating_version) AS charged_status,
    argMax(pricing_status, rating_version) AS current_status,
    max(rating_version) AS current_version,
    argMax(price_version, rating_version) AS current_price_version
FROM usage_cost_versions FINAL
GROUP BY event_id, started_at, team, project, user, model, backend, provider, deployment
HAVING max(rating_version) > 0;
