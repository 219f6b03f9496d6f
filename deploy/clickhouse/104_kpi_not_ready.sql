-- kpi_not_ready(grain_s UInt32, from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Not-ready time per agent_id, reason and interval_start, from kpi_agent_state_slices (state
-- not_ready of agent_state_intervals FINAL, clipped to [from, to) and split at bucket boundaries;
-- an open interval runs until `to`, or now() when `to` is later):
--   not_ready_s = time in not_ready with that reason inside the bucket and [from, to)
--   occurrences = not-ready intervals that started in the bucket (started_at in [from, to));
--                 an interval running on into later buckets counts once, where it started
CREATE OR REPLACE VIEW kpi_not_ready AS
SELECT
    agent_id,
    reason,
    interval_start,
    sum(slice_ms) / 1000 AS not_ready_s,
    countIf(started_in_slice) AS occurrences
FROM kpi_agent_state_slices(
    grain_s = {grain_s:UInt32},
    from = {from:DateTime64(3, 'UTC')},
    to = {to:DateTime64(3, 'UTC')}
)
WHERE state = 'not_ready'
GROUP BY agent_id, reason, interval_start;
