-- kpi_tickets(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Ticket KPIs per department (the current one) and ticket_type, from ticket_facts FINAL.
-- Attribution: a ticket counts by its created_at, for created_at in [from, to); its status and
-- SLA flags are the newest known.
--   created              = tickets created
--   open_backlog         = of those, tickets whose status is not resolved or closed now
--                          (for the whole backlog, pass a `from` before the oldest ticket)
--   first_response_sla   = tickets with a first response and no first-response breach
--                          / tickets with a first response or a breach
--                          (tickets still waiting and not yet breached are in neither)
--   resolution_sla       = the same with resolved_at and resolution_breached
--   avg_first_response_s = sum(first_response_s) / tickets with first_response_s
--   avg_resolution_s     = sum(resolution_s) / tickets with resolution_s
--   reopened             = tickets reopened at least once (reopen_count > 0)
--   resolved             = tickets resolved at least once (resolved_at set, or reopened)
--   reopen_rate          = reopened / resolved
-- Every ratio is NULL when its denominator is 0.
CREATE OR REPLACE VIEW kpi_tickets AS
SELECT
    toString(department) AS department,
    toString(ticket_type) AS ticket_type,
    count() AS created,
    countIf(status NOT IN ('resolved', 'closed')) AS open_backlog,
    countIf(first_response_at IS NOT NULL AND NOT first_response_breached)
        / nullIf(countIf(first_response_at IS NOT NULL OR first_response_breached), 0)
        AS first_response_sla,
    countIf(resolved_at IS NOT NULL AND NOT resolution_breached)
        / nullIf(countIf(resolved_at IS NOT NULL OR resolution_breached), 0) AS resolution_sla,
    sum(ifNull(first_response_s, 0)) / nullIf(count(first_response_s), 0) AS avg_first_response_s,
    sum(ifNull(resolution_s, 0)) / nullIf(count(resolution_s), 0) AS avg_resolution_s,
    countIf(reopen_count > 0) AS reopened,
    countIf(resolved_at IS NOT NULL OR reopen_count > 0) AS resolved,
    reopened / nullIf(resolved, 0) AS reopen_rate
FROM ticket_facts FINAL
WHERE created_at >= {from:DateTime64(3, 'UTC')} AND created_at < {to:DateTime64(3, 'UTC')}
GROUP BY department, ticket_type;

-- kpi_approval_steps(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Approval turnaround per department and step, from approval_step_facts FINAL.
-- Attribution: a step counts by its opened_at, for opened_at in [from, to).
--   steps          = steps opened
--   open_steps     = steps still open (outcome '')
--   decided        = outcome approved or rejected; approved, rejected = each outcome
--   escalated      = steps that ended escalated (outcome escalated)
--   expired        = steps that ended expired (outcome expired)
--   avg_duration_s = sum(duration_s) / closed steps (every outcome but open: the time the step
--                    spent in the department until decided, escalated or expired)
--   p90_duration_s = 90th percentile of duration_s of closed steps, interpolated between the
--                    two nearest values (quantileExactInclusive, like PERCENTILE.INC)
--   approval_rate  = approved / decided
-- Every ratio and the percentile are NULL when there is nothing to divide by.
CREATE OR REPLACE VIEW kpi_approval_steps AS
SELECT
    toString(department) AS department,
    step,
    count() AS steps,
    countIf(outcome = '') AS open_steps,
    countIf(outcome IN ('approved', 'rejected')) AS decided,
    countIf(outcome = 'approved') AS approved,
    countIf(outcome = 'rejected') AS rejected,
    countIf(outcome = 'escalated') AS escalated,
    countIf(outcome = 'expired') AS expired,
    sumIf(duration_s, outcome != '') / nullIf(steps - open_steps, 0) AS avg_duration_s,
    if(steps = open_steps, NULL, quantileExactInclusiveIf(0.9)(duration_s, outcome != ''))
        AS p90_duration_s,
    approved / nullIf(decided, 0) AS approval_rate
FROM approval_step_facts FINAL
WHERE opened_at >= {from:DateTime64(3, 'UTC')} AND opened_at < {to:DateTime64(3, 'UTC')}
GROUP BY department, step;
