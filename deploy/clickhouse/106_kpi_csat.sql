-- kpi_csat(from DateTime64(3, 'UTC'), to DateTime64(3, 'UTC'))
--
-- Customer satisfaction per department (the ticket's current department) from the survey score
-- on ticket_facts FINAL, on a 1-5 scale; tickets without a score, or with one outside 1-5, are
-- not responses. Attribution: by the ticket's created_at in [from, to) (the facts carry no
-- survey time).
--   responses = tickets with a score
--   avg_score = sum(score) / responses
--   csat_rate = responses with score >= 4 (satisfied or very satisfied) / responses
CREATE OR REPLACE VIEW kpi_csat AS
SELECT
    toString(department) AS department,
    count() AS responses,
    sum(assumeNotNull(csat_score)) / nullIf(responses, 0) AS avg_score,
    countIf(assumeNotNull(csat_score) >= 4) / nullIf(responses, 0) AS csat_rate
FROM ticket_facts FINAL
WHERE csat_score BETWEEN 1 AND 5
    AND created_at >= {from:DateTime64(3, 'UTC')}
    AND created_at < {to:DateTime64(3, 'UTC')}
GROUP BY department;
