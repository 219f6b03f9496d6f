-- One row per contact and queue visit. The KPI projector rewrites a fact with a higher version as the
-- contact's events arrive; reads use FINAL, so each fact counts once, at its newest version.
-- fact_id and arrival never change for a fact (arrival also picks the partition).
CREATE TABLE IF NOT EXISTS contact_facts
(
    fact_id         String COMMENT 'contact_id:visit',
    contact_id      String,
    visit           UInt16 COMMENT '1 for the first queue, +1 per overflow or transfer to another queue; 0 when the contact never queued (self-service)',
    queue_id        LowCardinality(String) COMMENT 'empty when the contact never queued',
    channel         LowCardinality(String) COMMENT 'voice, chat, email, callback',
    arrival         DateTime64(3, 'UTC') COMMENT 'when the contact reached the center',
    queued_at       Nullable(DateTime64(3, 'UTC')) COMMENT 'when this visit entered the queue',
    offered_at      Nullable(DateTime64(3, 'UTC')) COMMENT 'first offer to an agent in this visit',
    answered_at     Nullable(DateTime64(3, 'UTC')),
    ended_at        Nullable(DateTime64(3, 'UTC')) COMMENT 'NULL while the visit is open',
    wait_s          Float64 COMMENT 'queued_at until answered, abandoned, overflowed or called back',
    talk_s          Float64,
    hold_s          Float64,
    wrap_s          Float64 COMMENT 'after-contact work',
    outcome         LowCardinality(String) COMMENT 'empty while the visit is open',
    agent_id        LowCardinality(String) COMMENT 'the answering agent, empty when none',
    priority        UInt8,
    escalation_step UInt8,
    disposition     LowCardinality(String) COMMENT 'wrap-up disposition code, empty when none',
    caller_hash     String COMMENT 'keyed HMAC of the caller number, never the number itself',
    transferred     Bool,
    version         UInt64 COMMENT 'grows with every event folded into the fact; the highest version wins',
    CONSTRAINT outcome_is_known CHECK outcome IN ('', 'answered', 'abandoned', 'short_abandon', 'overflowed', 'callback', 'self_service'),
    CONSTRAINT caller_is_pseudonymised CHECK NOT match(caller_hash, '^\\+?[0-9 ()./-]{3,20}$')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(arrival)
ORDER BY fact_id
SETTINGS non_replicated_deduplication_window = 1000;
