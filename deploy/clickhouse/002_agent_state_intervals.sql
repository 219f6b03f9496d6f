-- One row per agent state interval, opened by an AgentStateChanged and closed by the next one.
-- interval_id and started_at never change for an interval (started_at also picks the partition).
CREATE TABLE IF NOT EXISTS agent_state_intervals
(
    interval_id String COMMENT 'agent_id:started_at (epoch milliseconds)',
    agent_id    LowCardinality(String),
    state       LowCardinality(String) COMMENT 'ready, not_ready, reserved, on_contact, wrap_up (logged out is not an interval)',
    reason      LowCardinality(String) COMMENT 'not-ready reason code, empty otherwise',
    started_at  DateTime64(3, 'UTC'),
    ended_at    Nullable(DateTime64(3, 'UTC')) COMMENT 'NULL while the agent is still in the state',
    duration_s  Float64 COMMENT '0 while open',
    queue_id    LowCardinality(String) COMMENT 'queue of the contact offered or handled, empty when none',
    skill_group LowCardinality(String) COMMENT 'the agent''s first skill group when the interval started',
    contact_id  String COMMENT 'contact offered, handled or wrapped up, empty otherwise',
    version     UInt64 COMMENT '1 while open, 2 once closed: the highest version wins'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY interval_id
SETTINGS non_replicated_deduplication_window = 1000;
