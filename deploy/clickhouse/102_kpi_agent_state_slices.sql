-- kpi_agent_state_slices(grain_s UInt32, from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- The building block of the agent views: each agent state interval (agent_state_intervals FINAL)
-- clipped to [from, to) and cut at the grain's bucket boundaries, one row per (interval, bucket)
-- it touches (arrayJoin over the buckets), so an interval crossing a boundary splits its time.
-- An open interval (ended_at NULL) runs until `to`, or until now() when `to` is later than now.
-- Buckets are epoch-aligned UTC like toStartOfInterval(t, INTERVAL grain_s SECOND).
--   interval_start   = the bucket's start
--   slice_ms         = milliseconds of the interval inside both the bucket and [from, to)
--   started_in_slice = 1 in the bucket where the interval started, when it started in [from, to)
--                      (an interval that started before `from` starts in no slice)
CREATE OR REPLACE VIEW kpi_agent_state_slices AS
WITH
    toUnixTimestamp64Milli({from:DateTime64(3, 'UTC')}) AS from_ms,
    toUnixTimestamp64Milli({to:DateTime64(3, 'UTC')}) AS to_ms,
    toInt64({grain_s:UInt32}) * 1000 AS grain_ms
SELECT
    interval_id,
    agent_id,
    skill_group,
    state,
    reason,
    started_at,
    arrayJoin(range(intDiv(start_ms, grain_ms) * grain_ms, end_ms, grain_ms)) AS bucket_ms,
    toDateTime(intDiv(bucket_ms, 1000), 'UTC') AS interval_start,
    least(end_ms, bucket_ms + grain_ms) - greatest(start_ms, bucket_ms) AS slice_ms,
    started_ms >= from_ms AND started_ms >= bucket_ms AND started_ms < bucket_ms + grain_ms
        AS started_in_slice
FROM
(
    SELECT
        interval_id,
        toString(agent_id) AS agent_id,
        toString(skill_group) AS skill_group,
        toString(state) AS state,
        toString(reason) AS reason,
        started_at,
        toUnixTimestamp64Milli(started_at) AS started_ms,
        greatest(started_ms, from_ms) AS start_ms,
        least(
            toUnixTimestamp64Milli(ifNull(ended_at, least({to:DateTime64(3, 'UTC')}, now64(3, 'UTC')))),
            to_ms
        ) AS end_ms
    FROM agent_state_intervals FINAL
    WHERE started_at < {to:DateTime64(3, 'UTC')}
        AND (ended_at IS NULL OR ended_at > {from:DateTime64(3, 'UTC')})
)
WHERE slice_ms > 0;
