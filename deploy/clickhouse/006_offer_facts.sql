-- One row per offer of a contact to an agent (ring), opened by ContactOffered and closed by its
-- outcome. offer_id and offered_at never change (offered_at picks the partition).
CREATE TABLE IF NOT EXISTS offer_facts
(
    offer_id   String,
    contact_id String,
    queue_id   LowCardinality(String),
    agent_id   LowCardinality(String),
    offered_at DateTime64(3, 'UTC'),
    ended_at   Nullable(DateTime64(3, 'UTC')) COMMENT 'NULL while ringing',
    ring_s     Float64 COMMENT 'offered until the outcome; 0 while ringing',
    outcome    LowCardinality(String) COMMENT 'empty while ringing',
    version    UInt64 COMMENT '1 while ringing, 2 once settled',
    CONSTRAINT outcome_is_known CHECK outcome IN ('', 'accepted', 'rejected', 'timed_out', 'withdrawn', 'contact_ended')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(offered_at)
ORDER BY offer_id
SETTINGS non_replicated_deduplication_window = 1000;
