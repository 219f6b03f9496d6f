-- One row per dispatch of a ticket to a department (services/kpi/tickets.py), rewritten with the
-- ticket's version whenever one of the dispatch's events (its clocks' included) or the follow-up that
-- judges it comes. dispatch_fact_id and dispatched_at never change (dispatched_at picks the partition).
-- A re-dispatch after a return and a redo after a dissatisfied follow-up are dispatches of their own.
CREATE TABLE IF NOT EXISTS dispatch_facts
(
    dispatch_fact_id     String COMMENT 'ticket_id:dispatch_id',
    ticket_id            String,
    dispatch_id          String,
    department           LowCardinality(String),
    role                 LowCardinality(String) COMMENT 'lead or assisting',
    ticket_type          LowCardinality(String) COMMENT 'the ticket''s, when dispatched',
    priority             UInt8 COMMENT 'the ticket''s, when dispatched',
    category             LowCardinality(String) COMMENT 'the ticket''s, when dispatched',
    redo                 Bool COMMENT 'sent again to the same lead department after a dissatisfied follow-up',
    replaces_dispatch_id String COMMENT 'the dispatch this one replaces (a return re-dispatched, a redo); empty otherwise',
    status               LowCardinality(String) COMMENT 'dispatched, accepted, completed, returned (the center reviews it), withdrawn (its return accepted)',
    dispatched_at        DateTime64(3, 'UTC'),
    accept_due_at        Nullable(DateTime64(3, 'UTC')) COMMENT 'the department must accept (or return) by then',
    accepted_at          Nullable(DateTime64(3, 'UTC')),
    accepted_on_time     Bool COMMENT 'DispatchAccepted.on_time: accepted by accept_due_at',
    answered_at          Nullable(DateTime64(3, 'UTC')) COMMENT 'the department''s first answer: its acceptance, or its return (a return answers the dispatch and stops its acceptance clock)',
    accept_breached      Bool COMMENT 'the acceptance clock breached: unanswered at accept_due_at, or answered late',
    first_due_at         Nullable(DateTime64(3, 'UTC')) COMMENT 'the completion due time when dispatched',
    due_at               Nullable(DateTime64(3, 'UTC')) COMMENT 'the completion due time now (extensions granted move it)',
    completed_at         Nullable(DateTime64(3, 'UTC')),
    completed_on_time    Bool COMMENT 'DispatchCompleted.on_time: completed by due_at (as extended)',
    completion_breached  Bool COMMENT 'the completion clock breached and no extension granted since',
    completion_working_s Nullable(Float64) COMMENT 'working time the completion clock counted, the center''s review of a return excluded',
    resolved             Bool COMMENT 'completed with the customer''s issue solved',
    returns              UInt16 COMMENT 'times the department returned it as not theirs',
    returns_refused      UInt16 COMMENT 'returns the center refused (the dispatch went back to the department)',
    return_accepted      Bool COMMENT 'the center accepted a return: the dispatch ended without a result',
    extensions_requested UInt16,
    extensions_granted   UInt16,
    extensions_refused   UInt16,
    progress_reports     UInt16,
    supervision_notices  UInt16 COMMENT 'notices for being overdue',
    escalated            Bool COMMENT 'escalated to the department''s management for being overdue',
    inside_s             Float64 COMMENT 'wall time the dispatch spent with the department, in closed stretches: from the dispatch (or a refused return) to its return or completion',
    inside_since         Nullable(DateTime64(3, 'UTC')) COMMENT 'start of the stretch running now; NULL while the dispatch is not with the department',
    ended_at             Nullable(DateTime64(3, 'UTC')) COMMENT 'completed or withdrawn; NULL while open',
    followed_up_at       Nullable(DateTime64(3, 'UTC')) COMMENT 'the follow-up call that judged this lead dispatch',
    follow_up_reached    Bool COMMENT 'that follow-up reached the customer',
    satisfaction         LowCardinality(String) COMMENT 'its verdict: satisfied, basically_satisfied, dissatisfied; empty when none',
    department_at_fault  Bool COMMENT 'dissatisfied for a reason the department controls (a redo follows)',
    version              UInt64 COMMENT 'the ticket''s version when the dispatch last changed: the highest wins',
    CONSTRAINT role_is_known CHECK role IN ('lead', 'assisting'),
    CONSTRAINT status_is_known CHECK status IN ('dispatched', 'accepted', 'completed', 'returned', 'withdrawn'),
    CONSTRAINT satisfaction_is_known CHECK satisfaction IN ('', 'satisfied', 'basically_satisfied', 'dissatisfied')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(dispatched_at)
ORDER BY dispatch_fact_id
SETTINGS non_replicated_deduplication_window = 1000;
