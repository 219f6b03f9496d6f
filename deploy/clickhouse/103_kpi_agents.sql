-- kpi_agents(grain_s UInt32, from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Agent KPIs per agent_id, skill_group and interval_start, from three sources (UNION ALL, then
-- one GROUP BY), so an agent with offers or handled contacts but no state interval still appears:
-- 1. State time: kpi_agent_state_slices (agent_state_intervals FINAL clipped to [from, to) and
--    split at bucket boundaries; an open interval runs until `to`, or now() when `to` is later);
--    skill_group is the interval's (the agent's first skill group when the interval started).
--      logged_in_s  = time in any state (logged-out time is no interval)
--      ready_s, not_ready_s, reserved_s, on_contact_s, wrap_up_s = time in that state
--      handling_s   = on_contact_s + wrap_up_s
--      occupancy    = handling_s / (handling_s + ready_s)
--      utilisation  = handling_s / logged_in_s
--    Reserved (ringing) time is in neither occupancy term: the agent is neither handling nor
--    idle; it is in logged_in_s, so utilisation counts it as not handling.
-- 2. Offers: offer_facts FINAL with offered_at in [from, to), in the bucket of offered_at; the
--    skill group is that of the agent's state interval current at offered_at (ASOF JOIN),
--    '' when the agent has none.
--      offers (every offer, ringing ones too), accepted, rejected, missed (outcome timed_out),
--      withdrawn, contact_ended
--      agent_answer_rate = accepted / (accepted + rejected + missed): offers the agent could
--                          answer, i.e. excluding withdrawn, contact_ended and still ringing
-- 3. Handled: contact_facts FINAL queue visits (visit >= 1) the agent answered (agent_id), in the
--    bucket of answered_at, for answered_at in [from, to); skill_group is the fact's.
--      handled       = answered visits
--      handle_time_s = sum(talk_s + hold_s + wrap_s)
--      aht_s         = handle_time_s / handled
-- Every ratio is NULL when its denominator is 0.
CREATE OR REPLACE VIEW kpi_agents AS
SELECT
    agent_id,
    skill_group,
    interval_start,
    sum(state_ms) / 1000 AS logged_in_s,
    sumIf(state_ms, state = 'ready') / 1000 AS ready_s,
    sumIf(state_ms, state = 'not_ready') / 1000 AS not_ready_s,
    sumIf(state_ms, state = 'reserved') / 1000 AS reserved_s,
    sumIf(state_ms, state = 'on_contact') / 1000 AS on_contact_s,
    sumIf(state_ms, state = 'wrap_up') / 1000 AS wrap_up_s,
    on_contact_s + wrap_up_s AS handling_s,
    handling_s / nullIf(handling_s + ready_s, 0) AS occupancy,
    handling_s / nullIf(logged_in_s, 0) AS utilisation,
    sum(is_offer) AS offers,
    countIf(offer_outcome = 'accepted') AS accepted,
    countIf(offer_outcome = 'rejected') AS rejected,
    countIf(offer_outcome = 'timed_out') AS missed,
    countIf(offer_outcome = 'withdrawn') AS withdrawn,
    countIf(offer_outcome = 'contact_ended') AS contact_ended,
    accepted / nullIf(accepted + rejected + missed, 0) AS agent_answer_rate,
    sum(is_handled) AS handled,
    sum(handle_s) AS handle_time_s,
    handle_time_s / nullIf(handled, 0) AS aht_s
FROM
(
    SELECT
        agent_id,
        skill_group,
        interval_start,
        state,
        slice_ms AS state_ms,
        '' AS offer_outcome,
        toUInt8(0) AS is_offer,
        toUInt8(0) AS is_handled,
        toFloat64(0) AS handle_s
    FROM kpi_agent_state_slices(
        grain_s = {grain_s:UInt32},
        from = {from:DateTime64(3, 'UTC')},
        to = {to:DateTime64(3, 'UTC')}
    )

    UNION ALL

    SELECT
        o.agent_id,
        ifNull(i.skill_group, ''),
        toStartOfInterval(o.offered_at, toIntervalSecond({grain_s:UInt32})),
        '',
        toInt64(0),
        o.outcome,
        toUInt8(1),
        toUInt8(0),
        toFloat64(0)
    FROM
    (
        SELECT toString(agent_id) AS agent_id, offered_at, toString(outcome) AS outcome
        FROM offer_facts FINAL
        WHERE offered_at >= {from:DateTime64(3, 'UTC')} AND offered_at < {to:DateTime64(3, 'UTC')}
    ) AS o
    ASOF LEFT JOIN
    (
        SELECT toString(agent_id) AS agent_id, started_at, toString(skill_group) AS skill_group
        FROM agent_state_intervals FINAL
        WHERE started_at < {to:DateTime64(3, 'UTC')}
    ) AS i ON o.agent_id = i.agent_id AND o.offered_at >= i.started_at

    UNION ALL

    SELECT
        toString(agent_id),
        toString(skill_group),
        toStartOfInterval(assumeNotNull(answered_at), toIntervalSecond({grain_s:UInt32})),
        '',
        toInt64(0),
        '',
        toUInt8(0),
        toUInt8(1),
        talk_s + hold_s + wrap_s
    FROM contact_facts FINAL
    WHERE visit >= 1
        AND agent_id != ''
        AND answered_at >= {from:DateTime64(3, 'UTC')}
        AND answered_at < {to:DateTime64(3, 'UTC')}
)
GROUP BY agent_id, skill_group, interval_start;

-- kpi_skill_groups(grain_s UInt32, from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- kpi_agents summed per skill_group and interval_start (same attribution and clipping), then the
-- ratios recomputed from the sums (not averaged over agents):
--   agents = distinct agents with a row (state time, offers or handled) in the bucket
--   every *_s, offers, accepted, rejected, missed, withdrawn, contact_ended, handled,
--   handle_time_s = the sum over the group's agents
--   occupancy = handling_s / (handling_s + ready_s); utilisation = handling_s / logged_in_s;
--   agent_answer_rate = accepted / (accepted + rejected + missed); aht_s = handle_time_s / handled
CREATE OR REPLACE VIEW kpi_skill_groups AS
SELECT
    skill_group,
    interval_start,
    uniqExact(agent_id) AS agents,
    sum(logged_in_s) AS logged_in_s,
    sum(ready_s) AS ready_s,
    sum(not_ready_s) AS not_ready_s,
    sum(reserved_s) AS reserved_s,
    sum(on_contact_s) AS on_contact_s,
    sum(wrap_up_s) AS wrap_up_s,
    sum(handling_s) AS handling_s,
    handling_s / nullIf(handling_s + ready_s, 0) AS occupancy,
    handling_s / nullIf(logged_in_s, 0) AS utilisation,
    sum(offers) AS offers,
    sum(accepted) AS accepted,
    sum(rejected) AS rejected,
    sum(missed) AS missed,
    sum(withdrawn) AS withdrawn,
    sum(contact_ended) AS contact_ended,
    accepted / nullIf(accepted + rejected + missed, 0) AS agent_answer_rate,
    sum(handled) AS handled,
    sum(handle_time_s) AS handle_time_s,
    handle_time_s / nullIf(handled, 0) AS aht_s
FROM kpi_agents(
    grain_s = {grain_s:UInt32},
    from = {from:DateTime64(3, 'UTC')},
    to = {to:DateTime64(3, 'UTC')}
)
GROUP BY skill_group, interval_start;
