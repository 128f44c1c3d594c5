-- The gateway's diagnosis of each attempt (UsageEvent v1's optional usage_problem, upstream_error_type and
-- usage_flags), so a failed or unmetered row says why. '' means "nothing to say", as in the event; rows
-- written before this migration read ''. Not Nullable: re-rating rebuilds events from these rows.
ALTER TABLE usage_events
    ADD COLUMN IF NOT EXISTS usage_problem String DEFAULT '',
    ADD COLUMN IF NOT EXISTS upstream_error_type LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS usage_flags LowCardinality(String) DEFAULT '';
