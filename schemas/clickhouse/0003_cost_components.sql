-- Per-class cost components next to the total (issue 4). Each is rounded once to 12 places and
-- cost_usd is their exact sum: input_cost_usd (the six input classes) + output_cost_usd (the four
-- output classes) + other_cost_usd (per-request fees; GPU time no token carried). NULL when unpriced.
-- cost_basis says how the row was priced: list (genai-prices), override (price overrides file),
-- throughput or gpu_seconds (self-hosted); empty when unpriced.
ALTER TABLE usage_costs
    ADD COLUMN IF NOT EXISTS cost_basis LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS input_text_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS cache_read_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS cache_write_5m_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS cache_write_1h_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS input_audio_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS input_image_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS output_text_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS reasoning_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS output_audio_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS output_image_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS other_cost_usd Nullable(Decimal(38, 12)),
    ADD COLUMN IF NOT EXISTS cache_creation_5m_input_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_creation_1h_input_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS input_audio_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS input_image_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS output_audio_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS output_image_tokens UInt64 DEFAULT 0;
