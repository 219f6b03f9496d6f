-- One row per stretch of time a ticket spent in one status (services/kpi/tickets.py), opened by the
-- event that moved it there and closed by the next move. interval_id and started_at never change for
-- an interval (started_at also picks the partition).
CREATE TABLE IF NOT EXISTS ticket_state_intervals
(
    interval_id String COMMENT 'ticket_id:the ticket version that began it',
    ticket_id   String,
    status      LowCardinality(String) COMMENT 'as ticket_facts.status',
    ticket_type LowCardinality(String),
    priority    UInt8 COMMENT 'the ticket''s priority when the interval began',
    started_at  DateTime64(3, 'UTC'),
    ended_at    Nullable(DateTime64(3, 'UTC')) COMMENT 'NULL while the ticket is still in the status',
    seconds     Float64 COMMENT 'wall time in the status; 0 while open',
    version     UInt64 COMMENT '1 while open, 2 once closed: the highest version wins'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY interval_id
SETTINGS non_replicated_deduplication_window = 1000;
