-- summary: Does recovery pay? Repurchase and churn within N days after recovered vs unrecovered moments
-- param: since DateTime64(3) = 1970-01-01 00:00:00
-- param: days UInt32 = 30
-- For every decided moment (recovered or unrecovered): did the customer (after identity merges)
-- buy again (order_placed or purchase) within `days` after it, and did they go silent (no touch
-- at all within `days`, our churn signal)? By rule, channel and recovery status.
WITH m AS (
    SELECT m.moment_id AS moment_id, m.rule AS rule, m.channel AS channel,
           m.recovery_status AS recovery, m.occurred_at AS at,
           if(a.canonical_id != '', a.canonical_id, m.customer_id) AS customer
    FROM negative_moments AS m FINAL
    LEFT JOIN customer_aliases AS a ON a.customer_id = m.customer_id
    WHERE m.recovery_status IN ('recovered', 'unrecovered') AND m.occurred_at >= {since:DateTime64(3)}),
t AS (
    SELECT if(a.canonical_id != '', a.canonical_id, t.customer_id) AS customer, t.occurred_at AS at,
           t.event_type IN ('order_placed', 'purchase') AS purchase
    FROM touchpoints AS t FINAL
    LEFT JOIN customer_aliases AS a ON a.customer_id = t.customer_id),
per_moment AS (
    SELECT m.moment_id, any(m.rule) AS rule, any(m.channel) AS channel, any(m.recovery) AS recovery,
           any(m.customer) AS customer,
           countIf(t.purchase AND t.at > m.at AND t.at <= m.at + toIntervalDay({days:UInt32})) > 0 AS repurchased,
           countIf(t.at > m.at AND t.at <= m.at + toIntervalDay({days:UInt32})) = 0 AS churned
    FROM m LEFT JOIN t ON t.customer = m.customer
    GROUP BY m.moment_id)
SELECT rule, channel, recovery, count() AS moments, uniqExact(customer) AS customers,
       round(avg(repurchased), 3) AS repurchase_rate, round(avg(churned), 3) AS churn_rate
FROM per_moment
GROUP BY rule, channel, recovery
ORDER BY rule, channel, recovery
