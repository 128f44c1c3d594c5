-- Budgets as the dashboards see them: one row per budget per period window, from the config, so the budget-use
-- panel can put a budget beside its window's spend in SQL (a budget's timezone varies per row, and ClickHouse's
-- date functions take a constant timezone: the windows are computed in Python, DST included, and stored).
-- Each sync writes the current window and those of the next ~400 days with one synced_at; the panel reads only
-- the latest sync, so a budget removed from the config disappears from the panel.
CREATE TABLE IF NOT EXISTS budget_windows
(
    name String,
    scope LowCardinality(String),
    scope_value String,
    enforcement LowCardinality(String),
    period LowCardinality(String),
    timezone LowCardinality(String),
    amount_usd Decimal(38, 12),
    window_start DateTime64(3, 'UTC'),
    window_reset DateTime64(3, 'UTC'),
    synced_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(synced_at)
ORDER BY (name, window_start);
