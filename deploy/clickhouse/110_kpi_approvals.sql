-- kpi_approval_steps(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Approval turnaround per department, request kind and step, from approval_step_facts FINAL (each
-- stint of a step in a department once, at its newest version: a step that escalated counts once in
-- its own department, outcome escalated, and once in its backup's). Attribution: a stint counts by
-- its opened_at, for opened_at in [from, to), with its outcome as known now.
--   department              = the department deciding the stint
--   kind                    = the request's kind (refund, compensation, ...)
--   step                    = the step's index in its chain, from 0
--   steps                   = stints opened
--   open_steps              = of those, still open (no outcome yet)
--   decided                 = stints ended approved or rejected
--   approved, rejected      = each of those outcomes
--   escalated               = stints whose deadline passed and that went to the backup
--   expired                 = stints whose deadline passed with no backup left (the request expired)
--   withdrawn               = stints open when the requester withdrew the request
--   decided_within_deadline = decided stints decided at or before their deadline as in effect (a
--                             request for more information moves it by the time waited)
--   within_deadline_rate    = decided_within_deadline / decided
--   avg_duration_s          = sum(duration_s) / closed stints (every outcome): wall time in the
--                             department from opened_at to the decision, the missed deadline
--                             (escalated, expired) or the withdrawal, less the time waiting on the
--                             requester for information
--   p90_duration_s          = 90th percentile of duration_s of the closed stints, interpolated between
--                             the two nearest values (quantileExactInclusive, like PERCENTILE.INC)
--   approval_rate           = approved / decided
--   info_requests           = requests for more information, summed
-- Every ratio and the percentile are NULL when there is nothing to divide by.
CREATE OR REPLACE VIEW kpi_approval_steps AS
SELECT
    toString(department) AS department,
    toString(kind) AS kind,
    step,
    count() AS steps,
    countIf(outcome = '') AS open_steps,
    countIf(outcome IN ('approved', 'rejected')) AS decided,
    countIf(outcome = 'approved') AS approved,
    countIf(outcome = 'rejected') AS rejected,
    countIf(outcome = 'escalated') AS escalated,
    countIf(outcome = 'expired') AS expired,
    countIf(outcome = 'withdrawn') AS withdrawn,
    countIf(outcome IN ('approved', 'rejected') AND approval_step_facts.within_deadline)
        AS decided_within_deadline,
    decided_within_deadline / nullIf(decided, 0) AS within_deadline_rate,
    sumIf(duration_s, outcome != '') / nullIf(steps - open_steps, 0) AS avg_duration_s,
    if(steps = open_steps, NULL, quantileExactInclusiveIf(0.9)(duration_s, outcome != ''))
        AS p90_duration_s,
    approved / nullIf(decided, 0) AS approval_rate,
    sum(approval_step_facts.info_requests) AS info_requests
FROM approval_step_facts FINAL
WHERE opened_at >= {from:DateTime64(3, 'UTC')} AND opened_at < {to:DateTime64(3, 'UTC')}
GROUP BY department, kind, step;

-- kpi_approvals_waiting
--
-- Approval steps waiting now per department, from approval_step_facts FINAL: every open stint,
-- whenever it opened. A department with no open stint has no row.
--   department       = the department deciding the stint
--   waiting          = open stints
--   waiting_on_info  = of those, paused: an approver asked for more information and the requester
--                      has not answered yet (their clock stands still)
--   overdue          = of those, not paused, with deadline_at <= now64(3) (the approvals service
--                      escalates or expires them when it fires the deadline)
--   oldest_opened_at = the earliest opened_at of the open stints
CREATE OR REPLACE VIEW kpi_approvals_waiting AS
SELECT
    toString(department) AS department,
    count() AS waiting,
    countIf(paused_since IS NOT NULL) AS waiting_on_info,
    countIf(paused_since IS NULL AND deadline_at <= now64(3)) AS overdue,
    min(opened_at) AS oldest_opened_at
FROM approval_step_facts FINAL
WHERE outcome = ''
GROUP BY department;
