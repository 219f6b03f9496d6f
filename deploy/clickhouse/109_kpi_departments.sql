-- kpi_departments(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- The 12345 closed loop per department, from dispatch_facts FINAL (each dispatch once, at its newest
-- version; lead and assisting dispatches alike, a re-dispatch and a redo each a dispatch of its own).
-- Attribution: a dispatch counts by its dispatched_at, for dispatched_at in [from, to), with its
-- outcomes as known now (a dispatch of March completed in April counts as completed in March's row).
--   dispatches             = dispatches sent to the department
--   lead_dispatches        = of those, with the lead role
--   open_dispatches        = still dispatched, accepted or returned (waiting for the center's review)
--   accepted_on_time       = dispatches the department answered by accept_due_at: accepted, or
--                            returned as not theirs (a return answers a dispatch; the acceptance
--                            clock stops), with no acceptance breach
--   acceptance_due         = dispatches answered (in time or late), or unanswered with their
--                            acceptance clock breached or accept_due_at passed (<= now()); a dispatch
--                            still within its acceptance deadline is in neither
--   accepted_on_time_rate  = accepted_on_time / acceptance_due (the scorecard's response rate)
--   completed              = dispatches completed
--   completed_on_time      = completed by their due time (as extended: DispatchCompleted.on_time)
--   completion_due         = completed, or still open (dispatched, accepted, returned) past due_at
--                            (<= now()); withdrawn dispatches (a return accepted) are in neither
--   completed_on_time_rate = completed_on_time / completion_due
--   resolved               = completions that solved the customer's issue
--   resolution_rate        = resolved / completed
--   follow_ups             = lead dispatches judged by a follow-up call that reached the customer and
--                            gave a verdict (the follow-up judges the ticket's newest completed lead
--                            dispatch of the department it names)
--   satisfied              = of those, verdict satisfied or basically satisfied
--   satisfaction_rate      = satisfied / follow_ups
--   returned               = dispatches the department returned at least once
--   withdrawn              = of those, the center accepted the return (the case was not theirs)
--   return_rate            = returned / dispatches
--   extension_requested    = dispatches with at least one extension requested
--   extensions_granted     = extensions granted, summed
--   extension_rate         = extension_requested / dispatches
--   avg_inside_s           = sum(inside_s) / dispatches that ended (completed or withdrawn): wall time
--                            with the department, from the dispatch (or a refused return) to its
--                            return or completion; the center's review of a return is not inside
--   p90_inside_s           = 90th percentile of inside_s of the dispatches that ended, interpolated
--                            (quantileExactInclusive, like PERCENTILE.INC)
--   supervised             = dispatches that got at least one supervision notice (overdue)
--   escalated              = dispatches escalated to the department's management (longer overdue)
--   redone                 = redo dispatches (sent back after a dissatisfied follow-up)
-- Every ratio and the percentile are NULL when there is nothing to divide by.
CREATE OR REPLACE VIEW kpi_departments AS
SELECT
    toString(department) AS department,
    count() AS dispatches,
    countIf(role = 'lead') AS lead_dispatches,
    countIf(status IN ('dispatched', 'accepted', 'returned')) AS open_dispatches,
    countIf(answered_at IS NOT NULL AND NOT accept_breached) AS accepted_on_time,
    countIf(answered_at IS NOT NULL OR accept_breached OR accept_due_at <= now64(3)) AS acceptance_due,
    accepted_on_time / nullIf(acceptance_due, 0) AS accepted_on_time_rate,
    countIf(status = 'completed') AS completed,
    countIf(status = 'completed' AND dispatch_facts.completed_on_time) AS completed_on_time,
    countIf(status = 'completed' OR (status IN ('dispatched', 'accepted', 'returned') AND due_at <= now64(3)))
        AS completion_due,
    completed_on_time / nullIf(completion_due, 0) AS completed_on_time_rate,
    countIf(status = 'completed' AND dispatch_facts.resolved) AS resolved,
    resolved / nullIf(completed, 0) AS resolution_rate,
    countIf(role = 'lead' AND follow_up_reached AND satisfaction != '') AS follow_ups,
    countIf(role = 'lead' AND follow_up_reached AND satisfaction IN ('satisfied', 'basically_satisfied'))
        AS satisfied,
    satisfied / nullIf(follow_ups, 0) AS satisfaction_rate,
    countIf(returns > 0) AS returned,
    countIf(return_accepted) AS withdrawn,
    returned / nullIf(dispatches, 0) AS return_rate,
    countIf(extensions_requested > 0) AS extension_requested,
    sum(dispatch_facts.extensions_granted) AS extensions_granted,
    extension_requested / nullIf(dispatches, 0) AS extension_rate,
    sumIf(inside_s, ended_at IS NOT NULL) / nullIf(countIf(ended_at IS NOT NULL), 0) AS avg_inside_s,
    if(countIf(ended_at IS NOT NULL) = 0, NULL, quantileExactInclusiveIf(0.9)(inside_s, ended_at IS NOT NULL))
        AS p90_inside_s,
    countIf(supervision_notices > 0) AS supervised,
    countIf(dispatch_facts.escalated) AS escalated,
    countIf(redo) AS redone
FROM dispatch_facts FINAL
WHERE dispatched_at >= {from:DateTime64(3, 'UTC')} AND dispatched_at < {to:DateTime64(3, 'UTC')}
GROUP BY department;

-- kpi_department_scorecard(month Date)
--
-- The monthly department scorecard: kpi_departments over the calendar month (UTC) holding `month`
-- (any day of it), weighted by the scorecard_weights version in force that month (FINAL; the version
-- with the latest effective_from not after the month's first day). No version in force: no rows.
--   month                  = the month's first day
--   weights_version        = the version of deploy/kpi/scorecard.yaml that weighted it
--   dispatches             = kpi_departments.dispatches of the month
--   response_rate          = kpi_departments.accepted_on_time_rate (answered by the acceptance deadline)
--   on_time_completion_rate = kpi_departments.completed_on_time_rate
--   resolution_rate, satisfaction_rate = the kpi_departments rates
--   *_weight               = the version's weights (they sum to 1)
--   score                  = 100 * sum(weight * rate) / sum(weight) over the rates that are not NULL:
--                            a KPI the department had nothing for that month (no follow-up, say) is left
--                            out and the others' weights scaled up; NULL when every weighted rate is NULL
--   rank                   = 1 for the best score of the month (ties share a rank; NULL scores last)
CREATE OR REPLACE VIEW kpi_department_scorecard AS
SELECT
    department,
    month,
    weights_version,
    dispatches,
    response_rate,
    on_time_completion_rate,
    resolution_rate,
    satisfaction_rate,
    response_weight,
    on_time_completion_weight,
    resolution_weight,
    satisfaction_weight,
    score,
    rank() OVER (ORDER BY score DESC NULLS LAST) AS rank
FROM
(
    SELECT
        d.department AS department,
        toStartOfMonth({month:Date}) AS month,
        w.version AS weights_version,
        d.dispatches AS dispatches,
        d.accepted_on_time_rate AS response_rate,
        d.completed_on_time_rate AS on_time_completion_rate,
        d.resolution_rate AS resolution_rate,
        d.satisfaction_rate AS satisfaction_rate,
        w.response AS response_weight,
        w.on_time_completion AS on_time_completion_weight,
        w.resolution AS resolution_weight,
        w.satisfaction AS satisfaction_weight,
        100 * (
            ifNull(response_rate * response_weight, 0)
            + ifNull(on_time_completion_rate * on_time_completion_weight, 0)
            + ifNull(resolution_rate * resolution_weight, 0)
            + ifNull(satisfaction_rate * satisfaction_weight, 0)
        ) / nullIf(
            if(response_rate IS NULL, 0, response_weight)
            + if(on_time_completion_rate IS NULL, 0, on_time_completion_weight)
            + if(resolution_rate IS NULL, 0, resolution_weight)
            + if(satisfaction_rate IS NULL, 0, satisfaction_weight),
            0
        ) AS score
    FROM kpi_departments(
        from = toDateTime64(toStartOfMonth({month:Date}), 3, 'UTC'),
        to = toDateTime64(addMonths(toStartOfMonth({month:Date}), 1), 3, 'UTC')
    ) AS d
    CROSS JOIN
    (
        SELECT version, response, on_time_completion, resolution, satisfaction
        FROM scorecard_weights FINAL
        WHERE effective_from <= toStartOfMonth({month:Date})
        ORDER BY effective_from DESC, version DESC
        LIMIT 1
    ) AS w
);
