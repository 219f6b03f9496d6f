-- The weights of the monthly department scorecard, one row per version of deploy/kpi/scorecard.yaml,
-- written by the KPI service at start (services/kpi/scorecard.py; the file refuses weights that do not
-- sum to 1). A version applies to the months from its effective_from until the next version's; the
-- newest load of a version wins.
CREATE TABLE IF NOT EXISTS scorecard_weights
(
    version            UInt32,
    effective_from     Date COMMENT 'the first month the version scores (its first day)',
    response           Float64 COMMENT 'weight of accepted_on_time_rate',
    on_time_completion Float64 COMMENT 'weight of completed_on_time_rate',
    resolution         Float64 COMMENT 'weight of resolution_rate',
    satisfaction       Float64 COMMENT 'weight of satisfaction_rate',
    source             String COMMENT 'the file and line the version was read from',
    loaded_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY version
SETTINGS non_replicated_deduplication_window = 1000;
