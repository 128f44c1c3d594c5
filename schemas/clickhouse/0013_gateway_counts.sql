-- Reconciliation counts (issue 21): per gateway and UTC hour, how many usage events that gateway emitted
-- (journaled) so far, as it last reported on the compacted topic ai.counts.v1. The counts are cumulative, so a
-- re-sent or replayed record states the same total again: ReplacingMergeTree(emitted), read with FINAL, keeps
-- the highest total per gateway and hour and never adds two records. `aimeter reconcile` sums them per hour and
-- compares the sum with the distinct events stored.
CREATE TABLE IF NOT EXISTS gateway_counts
(
    gateway_id String,
    hour DateTime('UTC'),
    emitted UInt64,
    produced_at DateTime64(3, 'UTC'),
    stored_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(emitted)
PARTITION BY toYYYYMM(hour)
ORDER BY (gateway_id, hour);
