-- live_gauges_now: the newest value of each live gauge (live_gauges FINAL: the latest measured_at
-- wins) per scope: 'queue' (queue_id is the queue), 'skill_group' (queue_id is the skill group) and
-- 'center' (queue_id empty).
CREATE OR REPLACE VIEW live_gauges_now AS
SELECT scope, queue_id, gauge, value, measured_at
FROM live_gauges FINAL;

-- staffing_advice_now: the newest staffing advice per queue (staffing_advice FINAL: the latest
-- computed_at wins), Erlang C at the live arrival rate and AHT.
CREATE OR REPLACE VIEW staffing_advice_now AS
SELECT
    queue_id,
    computed_at,
    arrivals_per_hour,
    aht_s,
    sl_threshold_s,
    sl_target_percent,
    agents_needed,
    predicted_service_level,
    predicted_asa_s,
    predicted_occupancy,
    agents_logged_in
FROM staffing_advice FINAL;
