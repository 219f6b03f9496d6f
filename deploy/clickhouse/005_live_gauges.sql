-- The latest value of each live gauge: the newest measurement replaces the older ones.
CREATE TABLE IF NOT EXISTS live_gauges
(
    scope       LowCardinality(String) COMMENT 'queue, skill_group or center',
    queue_id    LowCardinality(String) COMMENT 'the queue or skill group; empty for the center',
    gauge       LowCardinality(String) COMMENT 'contacts_waiting, longest_wait_s, estimated_wait_s, callbacks_waiting, agents_<state>',
    value       Float64,
    measured_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(measured_at)
ORDER BY (scope, queue_id, gauge)
SETTINGS non_replicated_deduplication_window = 1000;
