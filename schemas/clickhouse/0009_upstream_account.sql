-- Which provider account each request went to (UsageEvent v1's optional credential_id, upstream_project and
-- service_tier, issue 19): the backend's declared credential id (never the key), its OpenAI project or Anthropic
-- workspace id, and the service tier the request asked for. '' means "not declared", as in the event; rows
-- written before this migration read ''. Not Nullable: re-rating rebuilds events from these rows.
ALTER TABLE usage_events
    ADD COLUMN IF NOT EXISTS credential_id LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS upstream_project LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS service_tier LowCardinality(String) DEFAULT '';
