-- One row per ticket (services/kpi/tickets.py), rewritten with the ticket's version as it moves; reads
-- use FINAL, so each ticket counts once, at its newest version. ticket_id and created_at never change
-- for a ticket (created_at also picks the partition).
CREATE TABLE IF NOT EXISTS ticket_facts
(
    ticket_id                 String,
    ticket_type               LowCardinality(String) COMMENT 'inquiry, complaint, service_request, suggestion, follow_up',
    priority                  UInt8 COMMENT '1 (lowest) to 5 (critical), the newest (an escalation may raise it)',
    department                LowCardinality(String) COMMENT 'the department of the newest lead dispatch whose return was not accepted; empty when never dispatched',
    channel                   LowCardinality(String),
    origin_contact_id         String COMMENT 'contact the ticket came from, empty otherwise',
    customer_hash             String COMMENT 'keyed HMAC of the customer, for repeat-contact (FCR) checks',
    issue_code                LowCardinality(String) COMMENT 'the ticket''s category',
    status                    LowCardinality(String) COMMENT 'the tickets context''s TicketStatus; see the constraint for the values',
    created_at                DateTime64(3, 'UTC'),
    first_response_at         Nullable(DateTime64(3, 'UTC')) COMMENT 'the first note visible to the customer, or the resolution when none came before',
    first_response_due_at     Nullable(DateTime64(3, 'UTC')),
    resolved_at               Nullable(DateTime64(3, 'UTC')) COMMENT 'the newest resolution; NULL while open, and again once reopened',
    resolution_due_at         Nullable(DateTime64(3, 'UTC')) COMMENT 'the newest resolution clock''s due time (a reopening restarts it)',
    closed_at                 Nullable(DateTime64(3, 'UTC')) COMMENT 'closed or merged; NULL otherwise',
    first_response_s          Nullable(Float64) COMMENT 'wall time from created_at to first_response_at',
    resolution_s              Nullable(Float64) COMMENT 'wall time from created_at to resolved_at',
    first_response_breached   Bool COMMENT 'the first-response clock breached (SlaBreached, or fulfilled late)',
    resolution_breached       Bool COMMENT 'a resolution clock of the ticket breached, the ones before a reopening included',
    resolved_on_first_contact Bool COMMENT 'the first resolution was within the first contact, and the ticket was never reopened',
    reopen_count              UInt16,
    escalation_count          UInt16 COMMENT 'TicketEscalated events (to a group, or a priority raise)',
    dispatch_count            UInt16 COMMENT 'dispatches to departments, re-dispatches and redos included',
    csat_score                Nullable(UInt8) COMMENT 'the newest survey score, 1-5',
    outcome                   LowCardinality(String) COMMENT 'resolution code, empty while open',
    version                   UInt64 COMMENT 'the ticket''s aggregate version: the highest wins',
    origin                    LowCardinality(String) COMMENT 'agent, wrap_up, web_form, email, follow_up',
    sla_rule                  LowCardinality(String) COMMENT 'the SLA policy''s rule that timed the ticket',
    status_since              DateTime64(3, 'UTC') COMMENT 'when the ticket entered its status',
    first_response_working_s  Nullable(Float64) COMMENT 'working time the first-response clock counted',
    resolution_working_s      Nullable(Float64) COMMENT 'working time the newest resolution clock counted',
    redo_count                UInt16 COMMENT 'reopenings by a dissatisfied follow-up (the lead department redoes)',
    satisfaction              LowCardinality(String) COMMENT 'the newest reached follow-up''s verdict: satisfied, basically_satisfied, dissatisfied; empty when none',
    CONSTRAINT status_is_known CHECK status IN ('new', 'assigned', 'in_progress', 'dispatched',
        'waiting_on_customer', 'waiting_for_approval', 'escalated', 'resolved', 'closed', 'merged')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY ticket_id
SETTINGS non_replicated_deduplication_window = 1000;
-- A table made before the ticket projection existed takes the columns and the constraint above (a
-- second run changes nothing).
ALTER TABLE ticket_facts
    ADD COLUMN IF NOT EXISTS origin LowCardinality(String),
    ADD COLUMN IF NOT EXISTS sla_rule LowCardinality(String),
    ADD COLUMN IF NOT EXISTS status_since DateTime64(3, 'UTC'),
    ADD COLUMN IF NOT EXISTS first_response_working_s Nullable(Float64),
    ADD COLUMN IF NOT EXISTS resolution_working_s Nullable(Float64),
    ADD COLUMN IF NOT EXISTS redo_count UInt16,
    ADD COLUMN IF NOT EXISTS satisfaction LowCardinality(String);
ALTER TABLE ticket_facts DROP CONSTRAINT IF EXISTS status_is_known;
ALTER TABLE ticket_facts ADD CONSTRAINT status_is_known CHECK status IN ('new', 'assigned', 'in_progress',
    'dispatched', 'waiting_on_customer', 'waiting_for_approval', 'escalated', 'resolved', 'closed', 'merged');
