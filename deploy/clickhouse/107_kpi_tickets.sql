-- kpi_tickets(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Ticket KPIs per department and ticket_type, from ticket_facts FINAL (department: the department of
-- the ticket's newest lead dispatch whose return was not accepted, '' when never dispatched).
-- Attribution: a ticket counts by its created_at, for created_at in [from, to); its status and
-- SLA flags are the newest known.
--   created              = tickets created
--   open_backlog         = of those, tickets whose status is not resolved, closed or merged now
--                          (for the whole backlog, pass a `from` before the oldest ticket)
--   first_response_sla   = tickets with a first response and no first-response breach
--                          / tickets with a first response or a breach
--                          (tickets still waiting and not yet breached are in neither)
--   resolution_sla       = the same with resolved_at and resolution_breached (a ticket any of whose
--                          resolution clocks breached, before a reopening too, is not in time)
--   avg_first_response_s = sum(first_response_s) / tickets with first_response_s (wall time)
--   avg_resolution_s     = sum(resolution_s) / tickets with resolution_s (wall time, to the newest
--                          resolution; a reopened ticket not resolved again has none)
--   reopened             = tickets reopened at least once (reopen_count > 0)
--   resolved             = tickets resolved at least once (resolved_at set, or reopened)
--   reopen_rate          = reopened / resolved
--   resolved_on_first_contact = tickets whose first resolution was within the first contact and that
--                          were never reopened
--   first_contact_resolution_rate = resolved_on_first_contact / resolved
--                          (kpi_ticket_fcr divides by every ticket created instead)
--   escalated            = tickets escalated at least once (escalation_count > 0)
--   escalation_rate      = escalated / created
--   dispatched           = tickets dispatched to a department at least once
--   merged               = tickets merged into another (status merged)
-- Every ratio is NULL when its denominator is 0.
CREATE OR REPLACE VIEW kpi_tickets AS
SELECT
    toString(department) AS department,
    toString(ticket_type) AS ticket_type,
    count() AS created,
    countIf(status NOT IN ('resolved', 'closed', 'merged')) AS open_backlog,
    countIf(first_response_at IS NOT NULL AND NOT first_response_breached)
        / nullIf(countIf(first_response_at IS NOT NULL OR first_response_breached), 0)
        AS first_response_sla,
    countIf(resolved_at IS NOT NULL AND NOT resolution_breached)
        / nullIf(countIf(resolved_at IS NOT NULL OR resolution_breached), 0) AS resolution_sla,
    sum(ifNull(first_response_s, 0)) / nullIf(count(first_response_s), 0) AS avg_first_response_s,
    sum(ifNull(resolution_s, 0)) / nullIf(count(resolution_s), 0) AS avg_resolution_s,
    countIf(reopen_count > 0) AS reopened,
    countIf(resolved_at IS NOT NULL OR reopen_count > 0) AS resolved,
    reopened / nullIf(resolved, 0) AS reopen_rate,
    countIf(ticket_facts.resolved_on_first_contact) AS resolved_on_first_contact,
    resolved_on_first_contact / nullIf(resolved, 0) AS first_contact_resolution_rate,
    countIf(escalation_count > 0) AS escalated,
    escalated / nullIf(created, 0) AS escalation_rate,
    countIf(dispatch_count > 0) AS dispatched,
    countIf(status = 'merged') AS merged
FROM ticket_facts FINAL
WHERE created_at >= {from:DateTime64(3, 'UTC')} AND created_at < {to:DateTime64(3, 'UTC')}
GROUP BY department, ticket_type;

-- kpi_ticket_states(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Time in each status, from ticket_state_intervals FINAL (each stretch a ticket spent in one status,
-- from the event that moved it there to the next move). Attribution: an interval counts by its
-- started_at, for started_at in [from, to); a ticket that comes back to a status has one interval
-- per visit.
--   entered         = intervals begun (visits to the status)
--   tickets         = distinct tickets that entered the status
--   open_intervals  = of those, intervals the ticket is still in
--   ended           = of those, intervals that ended (the ticket moved on)
--   avg_s           = sum(seconds) / ended (wall time; only intervals that ended)
--   p90_s           = 90th percentile of seconds of the intervals that ended, interpolated between
--                     the two nearest values (quantileExactInclusive, like PERCENTILE.INC)
-- avg_s and p90_s are NULL when no interval ended.
CREATE OR REPLACE VIEW kpi_ticket_states AS
SELECT
    toString(status) AS status,
    count() AS entered,
    uniqExact(ticket_id) AS tickets,
    countIf(ended_at IS NULL) AS open_intervals,
    entered - open_intervals AS ended,
    sumIf(seconds, ended_at IS NOT NULL) / nullIf(ended, 0) AS avg_s,
    if(ended = 0, NULL, quantileExactInclusiveIf(0.9)(seconds, ended_at IS NOT NULL)) AS p90_s
FROM ticket_state_intervals FINAL
WHERE started_at >= {from:DateTime64(3, 'UTC')} AND started_at < {to:DateTime64(3, 'UTC')}
GROUP BY status;
