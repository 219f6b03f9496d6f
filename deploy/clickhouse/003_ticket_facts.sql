-- One row per ticket, rewritten with a higher version as the ticket moves.
-- ticket_id and created_at never change for a ticket (created_at also picks the partition).
CREATE TABLE IF NOT EXISTS ticket_facts
(
    ticket_id                 String,
    ticket_type               LowCardinality(String),
    priority                  UInt8,
    department                LowCardinality(String) COMMENT 'department currently responsible',
    channel                   LowCardinality(String),
    origin_contact_id         String COMMENT 'contact the ticket came from, empty otherwise',
    customer_hash             String COMMENT 'keyed HMAC of the customer, for repeat-contact (FCR) checks',
    issue_code                LowCardinality(String),
    status                    LowCardinality(String) COMMENT 'open, pending, resolved, closed',
    created_at                DateTime64(3, 'UTC'),
    first_response_at         Nullable(DateTime64(3, 'UTC')),
    first_response_due_at     Nullable(DateTime64(3, 'UTC')),
    resolved_at               Nullable(DateTime64(3, 'UTC')),
    resolution_due_at         Nullable(DateTime64(3, 'UTC')),
    closed_at                 Nullable(DateTime64(3, 'UTC')),
    first_response_s          Nullable(Float64),
    resolution_s              Nullable(Float64),
    first_response_breached   Bool,
    resolution_breached       Bool,
    resolved_on_first_contact Bool,
    reopen_count              UInt16,
    escalation_count          UInt16,
    dispatch_count            UInt16,
    csat_score                Nullable(UInt8),
    outcome                   LowCardinality(String) COMMENT 'resolution code, empty while open',
    version                   UInt64 COMMENT 'the highest version wins'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY ticket_id
SETTINGS non_replicated_deduplication_window = 1000;
