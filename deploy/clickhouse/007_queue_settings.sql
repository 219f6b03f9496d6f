-- Each queue's KPI settings, from routing's queue configuration (QueueUpserted): the service-level
-- target (percent within threshold_s) and the short-abandon threshold. The newest configuration wins.
CREATE TABLE IF NOT EXISTS queue_settings
(
    queue_id          String,
    name              String,
    sl_threshold_s    Float64 COMMENT 'T of the service level: answered within T seconds',
    sl_target_percent UInt8 COMMENT 'the target share answered within T, e.g. 80',
    short_abandon_s   Float64 COMMENT 'abandons within this many seconds are short abandons',
    skills            Array(String) COMMENT 'skills a contact of this queue needs',
    version           UInt64 COMMENT 'routing''s configuration version: the highest wins'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY queue_id
SETTINGS non_replicated_deduplication_window = 1000;
