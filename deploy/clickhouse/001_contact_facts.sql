-- One row per contact (visit 0: its arrival, IVR and end) and one per queue visit (visit 1, 2, ...: a
-- queue entry, from queueing to answer, abandon, overflow, callback or disconnect). The KPI projector
-- rewrites a fact with a higher version as the contact's events arrive; reads use FINAL, so each fact
-- counts once, at its newest version. fact_id and arrival never change (arrival picks the partition).
CREATE TABLE IF NOT EXISTS contact_facts
(
    fact_id         String COMMENT 'contact_id:visit',
    contact_id      String,
    visit           UInt16 COMMENT '0 for the contact itself; 1 for its first queue, +1 per overflow or transfer to a queue',
    queue_id        LowCardinality(String) COMMENT 'the visit''s queue; on visit 0 the first queue, empty when it never queued',
    channel         LowCardinality(String) COMMENT 'voice, chat, email, sms, callback',
    arrival         DateTime64(3, 'UTC') COMMENT 'when the contact reached the center',
    queued_at       Nullable(DateTime64(3, 'UTC')) COMMENT 'when this visit entered the queue',
    offered_at      Nullable(DateTime64(3, 'UTC')) COMMENT 'first offer to an agent in this visit',
    answered_at     Nullable(DateTime64(3, 'UTC')) COMMENT 'when an agent took the visit (a callback: when it reached the agent)',
    ended_at        Nullable(DateTime64(3, 'UTC')) COMMENT 'visit 0: the contact ended; visit n: the visit ended; NULL while open',
    wait_s          Float64 COMMENT 'queued until answered, abandoned, overflowed, disconnected or a callback was scheduled',
    talk_s          Float64 COMMENT 'the answering agent''s time connected, less hold',
    hold_s          Float64,
    wrap_s          Float64 COMMENT 'the answering agent''s after-contact work for this contact',
    outcome         LowCardinality(String) COMMENT 'empty while open; see the constraint for the values',
    agent_id        LowCardinality(String) COMMENT 'the answering agent, empty when none',
    skill_group     LowCardinality(String) COMMENT 'the answering agent''s first skill group, empty when none',
    priority        UInt8,
    escalation_step UInt8 COMMENT 'the highest escalation step reached while waiting',
    offers          UInt16 COMMENT 'offers made to agents in this visit',
    disposition     LowCardinality(String) COMMENT 'wrap-up disposition code, empty when none',
    resolved        Bool COMMENT 'the agent marked the issue resolved at wrap-up',
    caller_hash     String COMMENT 'keyed HMAC of the caller number, never the number itself',
    transferred     Bool COMMENT 'the answering agent transferred the contact on',
    callback        Bool COMMENT 'the caller took a callback instead of waiting in this visit',
    vip             Bool,
    version         UInt64 COMMENT 'grows with every event folded into the contact; the highest version wins',
    -- visit 0: routed (went on to a queue), self_service (IVR completed it), ivr_abandon (ended in IVR).
    -- visit n: answered, abandoned, short_abandon (abandoned within the queue's threshold), overflowed,
    -- callback (a callback is pending), callback_cancelled, disconnected (voicemail or disconnect fallback),
    -- void (no visit: an overflow routing decided after the caller had gone; every KPI leaves it out).
    CONSTRAINT outcome_is_known CHECK outcome IN ('', 'routed', 'self_service', 'ivr_abandon', 'answered',
        'abandoned', 'short_abandon', 'overflowed', 'callback', 'callback_cancelled', 'disconnected', 'void'),
    CONSTRAINT caller_is_pseudonymised CHECK NOT match(caller_hash, '^\\+?[0-9 ()./-]{3,20}$')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(arrival)
ORDER BY fact_id
SETTINGS non_replicated_deduplication_window = 1000;
-- A table made before 'void' was an outcome takes the constraint above (a second run changes nothing).
ALTER TABLE contact_facts DROP CONSTRAINT IF EXISTS outcome_is_known;
ALTER TABLE contact_facts ADD CONSTRAINT outcome_is_known CHECK outcome IN ('', 'routed', 'self_service',
    'ivr_abandon', 'answered', 'abandoned', 'short_abandon', 'overflowed', 'callback', 'callback_cancelled',
    'disconnected', 'void');
