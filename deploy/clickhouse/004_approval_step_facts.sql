-- One row per step of an approval request: the time a request spends in each department.
-- step_fact_id and opened_at never change for a step (opened_at also picks the partition).
CREATE TABLE IF NOT EXISTS approval_step_facts
(
    step_fact_id String COMMENT 'request_id:step',
    request_id   String,
    ticket_id    String,
    chain        LowCardinality(String) COMMENT 'approval chain the policy chose',
    step         UInt16,
    department   LowCardinality(String) COMMENT 'department that decides this step',
    opened_at    DateTime64(3, 'UTC'),
    deadline_at  Nullable(DateTime64(3, 'UTC')),
    decided_at   Nullable(DateTime64(3, 'UTC')) COMMENT 'NULL while the step is open',
    duration_s   Float64 COMMENT 'opened_at until decided, escalated or expired; 0 while open',
    reminders    UInt16,
    escalations  UInt16,
    outcome      LowCardinality(String) COMMENT 'empty while open',
    version      UInt64 COMMENT 'the highest version wins',
    CONSTRAINT outcome_is_known CHECK outcome IN ('', 'approved', 'rejected', 'escalated', 'expired')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(opened_at)
ORDER BY step_fact_id
SETTINGS non_replicated_deduplication_window = 1000;
