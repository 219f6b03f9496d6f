-- The latest value of each live gauge per queue: the newest measurement replaces the older ones.
CREATE TABLE IF NOT EXISTS live_gauges
(
    queue_id    LowCardinality(String) COMMENT 'queue or skill group; empty for center-wide gauges',
    gauge       LowCardinality(String) COMMENT 'contacts_waiting, longest_wait_s, estimated_wait_s, agents_ready, agents_on_contact, ...',
    value       Float64,
    measured_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(measured_at)
ORDER BY (queue_id, gauge)
SETTINGS non_replicated_deduplication_window = 1000;
