-- kpi_fcr(days UInt32, from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Repeat-contact (caller-based) first-contact resolution per queue_id, from contact_facts FINAL.
-- Attribution: a handled visit counts by its queued_at, for queued_at in [from, to).
--   handled  = queue visits (visit >= 1) with answered_at
--   repeats  = handled visits followed by another contact of the same caller_hash on the same
--              queue (a queue visit of any outcome but void) whose arrival is after this visit's
--              answered_at and at most `days` days later (arrival <= answered_at + days: a repeat
--              exactly N days later counts, one later does not). The later contact may arrive
--              after `to`. An empty caller_hash (caller unknown) never counts as a repeat.
--   fcr_rate = (handled - repeats) / handled, NULL when nothing was handled
-- The ticket-based FCR (the agent resolved the issue on the first contact) is kpi_ticket_fcr.
CREATE OR REPLACE VIEW kpi_fcr AS
SELECT
    h.queue_id AS queue_id,
    count() AS handled,
    countIf(r.arrival > h.answered AND r.arrival <= h.answered + toIntervalDay({days:UInt32}))
        AS repeats,
    (handled - repeats) / nullIf(handled, 0) AS fcr_rate
FROM
(
    SELECT toString(queue_id) AS queue_id, caller_hash, assumeNotNull(answered_at) AS answered
    FROM contact_facts FINAL
    WHERE visit >= 1
        AND answered_at IS NOT NULL
        AND queued_at >= {from:DateTime64(3, 'UTC')}
        AND queued_at < {to:DateTime64(3, 'UTC')}
) AS h
-- ASOF picks, per handled visit, the caller's first arrival on the queue after answered_at.
ASOF LEFT JOIN
(
    SELECT DISTINCT toString(queue_id) AS queue_id, caller_hash, arrival
    FROM contact_facts FINAL
    WHERE visit >= 1
        AND outcome != 'void'
        AND caller_hash != ''
        AND arrival > {from:DateTime64(3, 'UTC')}
        AND arrival <= {to:DateTime64(3, 'UTC')} + toIntervalDay({days:UInt32})
) AS r ON h.queue_id = r.queue_id AND h.caller_hash = r.caller_hash AND h.answered < r.arrival
GROUP BY queue_id;

-- kpi_ticket_fcr(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Ticket-based first-contact resolution per department (the ticket's current department), from
-- ticket_facts FINAL. Attribution: a ticket counts by its created_at, for created_at in [from, to).
--   tickets                   = tickets created
--   resolved_on_first_contact = tickets flagged resolved_on_first_contact
--   ticket_fcr_rate           = resolved_on_first_contact / tickets
CREATE OR REPLACE VIEW kpi_ticket_fcr AS
SELECT
    toString(department) AS department,
    count() AS tickets,
    countIf(ticket_facts.resolved_on_first_contact) AS resolved_on_first_contact,
    resolved_on_first_contact / nullIf(tickets, 0) AS ticket_fcr_rate
FROM ticket_facts FINAL
WHERE created_at >= {from:DateTime64(3, 'UTC')} AND created_at < {to:DateTime64(3, 'UTC')}
GROUP BY department;
