-- The KPI service's latest staffing advice per queue (Erlang C on the live arrival rate and AHT),
-- refreshed with the live gauges; the newest computation wins.
CREATE TABLE IF NOT EXISTS staffing_advice
(
    queue_id               String,
    computed_at            DateTime64(3, 'UTC'),
    arrivals_per_hour      Float64 COMMENT 'contacts queued in the last window, per hour',
    aht_s                  Float64 COMMENT 'average handle time of the window (talk + hold + wrap-up)',
    sl_threshold_s         Float64,
    sl_target_percent      UInt8,
    agents_needed          UInt32 COMMENT 'fewest agents meeting the service-level target (Erlang C)',
    predicted_service_level Float64 COMMENT 'at agents_needed, 0..1',
    predicted_asa_s        Float64 COMMENT 'at agents_needed',
    predicted_occupancy    Float64 COMMENT 'at agents_needed, 0..1',
    agents_logged_in       UInt32 COMMENT 'agents logged in now who have the queue''s skills'
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY queue_id
SETTINGS non_replicated_deduplication_window = 1000;
