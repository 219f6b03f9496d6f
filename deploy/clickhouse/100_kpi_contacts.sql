-- kpi_contacts(by String, grain_s UInt32, from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Queue-visit KPIs (contact_facts FINAL, visit >= 1 and not void: each fact once, at its newest version).
-- Attribution: a visit counts in the interval of its queued_at (the queue entry), for
-- queued_at in [from, to); interval_start = toStartOfInterval(queued_at, INTERVAL grain_s SECOND)
-- (epoch-aligned UTC: 900 = 15 minutes, 3600 = hour, 86400 = UTC day).
-- key: by = 'queue' -> queue_id, 'channel' -> channel, 'agent' -> agent_id (the answering agent),
-- 'skill_group' -> skill_group (the answering agent's); by agent or skill group, visits nobody
-- answered have the key ''. Any other value of by fails the query (throwIf, even on no facts).
--
-- Counts (still-open visits, outcome '', count as offered and nothing else):
--   offered              = visits
--   handled              = visits with answered_at (live or callback)
--   abandoned            = outcome 'abandoned' (short abandons are their own count)
--   short_abandoned      = outcome 'short_abandon' (routing applied the queue's short_abandon_s)
--   overflowed, disconnected = outcome 'overflowed', 'disconnected'
--   callbacks_requested  = visits with callback (the caller took a callback)
--   callbacks_completed  = callback visits with answered_at (the callback reached an agent)
--   live_offered         = offered - callbacks_requested
--   live_answered        = handled visits that are not callbacks
--   answered_within_t    = live answered with wait_s <= T
--   abandoned_within_t   = abandoned (short excluded) with wait_s <= T
-- T is the visit's queue's queue_settings.sl_threshold_s (FINAL), 20 s for a queue without
-- settings; sl_threshold_s / sl_target_percent (default 80) are NULL when the visits of a row
-- have different settings (e.g. by channel over several queues).
--
-- Ratios are fractions 0..1, NULL when the denominator is 0:
--   answer_rate                      = handled / offered (short abandons stay in offered)
--   service_level_answered           = answered_within_t / live_answered
--                                      (variant 1: answered only; abandons ignored)
--   service_level_answered_abandoned = answered_within_t / (live_answered + abandoned)
--                                      (variant 2: every abandon counts against, short abandons
--                                      excluded, abandons within T included)
--   service_level_offered            = answered_within_t / (live_offered - short_abandoned)
--                                      (variant 3: of live offered, excluding short abandons, so
--                                      open, overflowed and disconnected visits count against)
--   Callback visits are in no service-level variant: their wait ends when the callback is
--   scheduled, not answered.
--   asa_s                   = sum(wait_s of live answered) / live_answered
--   aht_s                   = sum(talk_s + hold_s + wrap_s of handled) / handled
--   avg_talk_s, avg_hold_s, avg_wrap_s = sum(talk_s | hold_s | wrap_s of handled) / handled
--   avg_time_to_abandon_s   = sum(wait_s of abandoned) / abandoned (short abandons excluded)
--   abandon_rate            = abandoned / (offered - short_abandoned)
--                             (short abandons excluded from numerator and denominator)
--   transfer_rate           = handled visits with transferred / handled
--   callback_completion_rate = callbacks_completed / callbacks_requested
CREATE OR REPLACE VIEW kpi_contacts AS
SELECT
    key,
    interval_start,
    count() AS offered,
    countIf(is_answered) AS handled,
    countIf(outcome = 'abandoned') AS abandoned,
    countIf(outcome = 'short_abandon') AS short_abandoned,
    countIf(outcome = 'overflowed') AS overflowed,
    countIf(outcome = 'disconnected') AS disconnected,
    countIf(is_callback) AS callbacks_requested,
    countIf(is_callback AND is_answered) AS callbacks_completed,
    countIf(NOT is_callback) AS live_offered,
    countIf(is_answered AND NOT is_callback) AS live_answered,
    countIf(is_answered AND NOT is_callback AND wait <= threshold) AS answered_within_t,
    countIf(outcome = 'abandoned' AND wait <= threshold) AS abandoned_within_t,
    handled / nullIf(offered, 0) AS answer_rate,
    answered_within_t / nullIf(live_answered, 0) AS service_level_answered,
    answered_within_t / nullIf(live_answered + abandoned, 0) AS service_level_answered_abandoned,
    answered_within_t / nullIf(countIf(NOT is_callback AND outcome != 'short_abandon'), 0)
        AS service_level_offered,
    sumIf(wait, is_answered AND NOT is_callback) / nullIf(live_answered, 0) AS asa_s,
    sumIf(talk + hold + wrap, is_answered) / nullIf(handled, 0) AS aht_s,
    sumIf(talk, is_answered) / nullIf(handled, 0) AS avg_talk_s,
    sumIf(hold, is_answered) / nullIf(handled, 0) AS avg_hold_s,
    sumIf(wrap, is_answered) / nullIf(handled, 0) AS avg_wrap_s,
    sumIf(wait, outcome = 'abandoned') / nullIf(abandoned, 0) AS avg_time_to_abandon_s,
    abandoned / nullIf(offered - short_abandoned, 0) AS abandon_rate,
    countIf(is_answered AND is_transferred) / nullIf(handled, 0) AS transfer_rate,
    callbacks_completed / nullIf(callbacks_requested, 0) AS callback_completion_rate,
    if(min(threshold) = max(threshold), min(threshold), NULL) AS sl_threshold_s,
    if(min(target) = max(target), min(target), NULL) AS sl_target_percent
FROM
(
    SELECT
        multiIf(
            {by:String} = 'queue', toString(c.queue_id),
            {by:String} = 'channel', toString(c.channel),
            {by:String} = 'agent', toString(c.agent_id),
            toString(c.skill_group)
        ) AS key,
        toStartOfInterval(assumeNotNull(c.queued_at), toIntervalSecond({grain_s:UInt32})) AS interval_start,
        c.outcome AS outcome,
        c.answered_at IS NOT NULL AS is_answered,
        c.callback AS is_callback,
        c.transferred AS is_transferred,
        c.wait_s AS wait,
        c.talk_s AS talk,
        c.hold_s AS hold,
        c.wrap_s AS wrap,
        -- configured is 0 (or NULL under join_use_nulls) for a queue without settings.
        if(s.configured = 1, s.sl_threshold_s, 20.0) AS threshold,
        if(s.configured = 1, s.sl_target_percent, 80) AS target
    FROM contact_facts AS c FINAL
    LEFT JOIN
    (
        SELECT queue_id, sl_threshold_s, sl_target_percent, toUInt8(1) AS configured
        FROM queue_settings FINAL
    ) AS s ON toString(c.queue_id) = s.queue_id
    WHERE c.visit >= 1
        AND c.outcome != 'void'
        AND c.queued_at >= {from:DateTime64(3, 'UTC')}
        AND c.queued_at < {to:DateTime64(3, 'UTC')}
        -- A scalar subquery runs once before the scan, so an unknown `by` fails even on no facts.
        AND (
            SELECT throwIf(
                {by:String} NOT IN ('queue', 'channel', 'agent', 'skill_group'),
                'kpi_contacts: by must be queue, channel, agent or skill_group'
            )
        ) = 0
)
GROUP BY key, interval_start;
