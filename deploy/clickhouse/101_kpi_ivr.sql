-- kpi_ivr(grain_s UInt32, from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- IVR KPIs per channel (key) from the contacts themselves (contact_facts FINAL, visit 0).
-- Attribution: a contact counts in the interval of its arrival, for arrival in [from, to);
-- interval_start = toStartOfInterval(arrival, INTERVAL grain_s SECOND) (epoch-aligned UTC).
--   contacts          = contacts that arrived
--   self_service      = outcome 'self_service' (the IVR completed the contact)
--   ivr_abandon       = outcome 'ivr_abandon' (the caller left in the IVR)
--   routed            = outcome 'routed' (went on to a queue)
--   in_ivr            = outcome '' (still open: in the IVR, or not yet classified)
--   self_service_rate = self_service / contacts (all arrivals, so IVR abandons and still-open
--                       contacts count against it); NULL when there are no contacts
CREATE OR REPLACE VIEW kpi_ivr AS
SELECT
    toString(channel) AS key,
    toStartOfInterval(arrival, toIntervalSecond({grain_s:UInt32})) AS interval_start,
    count() AS contacts,
    countIf(outcome = 'self_service') AS self_service,
    countIf(outcome = 'ivr_abandon') AS ivr_abandon,
    countIf(outcome = 'routed') AS routed,
    countIf(outcome = '') AS in_ivr,
    self_service / nullIf(contacts, 0) AS self_service_rate
FROM contact_facts FINAL
WHERE visit = 0
    AND arrival >= {from:DateTime64(3, 'UTC')}
    AND arrival < {to:DateTime64(3, 'UTC')}
GROUP BY key, interval_start;
