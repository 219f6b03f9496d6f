-- One row per stint of an approval step in a department (services/kpi/approvals.py): the time a
-- request spends in each department. A step's first stint (stint 0) is with the department that opens
-- it; when its deadline passes and it escalates, that stint ends 'escalated' at the missed deadline and
-- the backup's is a row of its own (stint 1, on its fresh deadline). Rewritten with the request's
-- version when one of the stint's events comes. step_fact_id and opened_at never change for a stint
-- (opened_at also picks the partition). No approver ids: staff ids stay in the approvals' audit trail.
CREATE TABLE IF NOT EXISTS approval_step_facts
(
    step_fact_id    String COMMENT 'request_id:step:stint',
    request_id      String,
    ticket_id       String,
    kind            LowCardinality(String) COMMENT 'the request''s kind: refund, compensation, contract_change, fee_waiver',
    rule            LowCardinality(String) COMMENT 'the policy rule that chose the chain',
    policy_id       LowCardinality(String),
    policy_version  UInt32 COMMENT 'the version of the policy the request started with',
    step            UInt16 COMMENT 'the step''s index in its chain, from 0',
    step_name       LowCardinality(String) COMMENT 'the step''s name in its policy rule, e.g. finance',
    stint           UInt8 COMMENT '0: the department that opened the step; 1: its backup after an escalation',
    department      LowCardinality(String) COMMENT 'the department deciding the step in this stint',
    opened_at       DateTime64(3, 'UTC') COMMENT 'the step opened (stint 0), or went to the backup (stint 1)',
    deadline_at     Nullable(DateTime64(3, 'UTC')) COMMENT 'the deadline in effect: moved by the time waiting on the requester for information',
    paused_since    Nullable(DateTime64(3, 'UTC')) COMMENT 'waiting on the requester for information since then; NULL otherwise',
    ended_at        Nullable(DateTime64(3, 'UTC')) COMMENT 'decided, escalated (the missed deadline), expired (the missed deadline) or withdrawn; NULL while open',
    duration_s      Float64 COMMENT 'opened_at until ended_at less paused_s; 0 while open',
    paused_s        Float64 COMMENT 'wall time waiting on the requester for information, in pauses that ended',
    info_requests   UInt16 COMMENT 'requests for more information (DECISION_REQUEST_INFO)',
    reminders       UInt16 COMMENT 'reminders sent',
    within_deadline Bool COMMENT 'approved or rejected at or before deadline_at',
    outcome         LowCardinality(String) COMMENT 'approved, rejected, escalated, expired, withdrawn; empty while open',
    version         UInt64 COMMENT 'the request''s version when the stint last changed: the highest wins',
    CONSTRAINT outcome_is_known CHECK outcome IN ('', 'approved', 'rejected', 'escalated', 'expired', 'withdrawn')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(opened_at)
ORDER BY step_fact_id
SETTINGS non_replicated_deduplication_window = 1000;
-- A table made before the approvals projection existed (one row per step, never written) takes the
-- columns and the constraint above (a second run changes nothing).
ALTER TABLE approval_step_facts
    ADD COLUMN IF NOT EXISTS kind LowCardinality(String),
    ADD COLUMN IF NOT EXISTS rule LowCardinality(String),
    ADD COLUMN IF NOT EXISTS policy_id LowCardinality(String),
    ADD COLUMN IF NOT EXISTS policy_version UInt32,
    ADD COLUMN IF NOT EXISTS step_name LowCardinality(String),
    ADD COLUMN IF NOT EXISTS stint UInt8,
    ADD COLUMN IF NOT EXISTS paused_since Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS ended_at Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS paused_s Float64,
    ADD COLUMN IF NOT EXISTS info_requests UInt16,
    ADD COLUMN IF NOT EXISTS within_deadline Bool,
    DROP COLUMN IF EXISTS chain,
    DROP COLUMN IF EXISTS decided_at,
    DROP COLUMN IF EXISTS escalations;
ALTER TABLE approval_step_facts DROP CONSTRAINT IF EXISTS outcome_is_known;
ALTER TABLE approval_step_facts ADD CONSTRAINT outcome_is_known
    CHECK outcome IN ('', 'approved', 'rejected', 'escalated', 'expired', 'withdrawn');
