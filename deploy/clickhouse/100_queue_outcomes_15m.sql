-- Sample of the KPI view pattern: facts read with FINAL (each fact once, at its newest version),
-- grouped per queue and 15-minute interval of the visit's queue entry. The KPI issue writes the rest.
CREATE OR REPLACE VIEW queue_outcomes_15m AS
SELECT
    queue_id,
    toStartOfFifteenMinutes(assumeNotNull(queued_at)) AS interval_start,
    count() AS queued,
    countIf(outcome = 'answered') AS answered,
    countIf(outcome = 'abandoned') AS abandoned,
    countIf(outcome = 'short_abandon') AS short_abandoned,
    countIf(outcome = '') AS still_open
FROM contact_facts FINAL
WHERE queued_at IS NOT NULL
GROUP BY queue_id, interval_start;
