-- summary: Recovery impact by action: recovery rate and repurchase after alerts, by the recommended action
-- param: since DateTime64(3) = 1970-01-01 00:00:00
-- param: days UInt32 = 30
-- One row per alert (alerts FINAL: its latest moment and the action its playbook recommended for
-- it, see cem/rules/playbooks.toml). recovery_rate = recovered / decided (recovered + unrecovered;
-- open moments are not decided yet). repurchase_rate: the share of decided alerts whose customer
-- (after identity merges) bought again (order_placed or purchase) within `days` after the moment.
-- escalated: alerts whose moment closed unrecovered and escalated. Compare actions with care: a
-- playbook chooses the action by rule and customer value, so actions serve different customers.
WITH a AS (
    SELECT al.alert_id AS alert_id, al.action AS action, al.escalated AS escalated,
           al.recovery_status AS recovery, m.occurred_at AS at,
           if(ca.canonical_id != '', ca.canonical_id, al.customer_id) AS customer
    FROM alerts AS al FINAL
    INNER JOIN negative_moments AS m FINAL ON m.moment_id = al.moment_id
    LEFT JOIN customer_aliases AS ca ON ca.customer_id = al.customer_id
    WHERE al.action != '' AND m.occurred_at >= {since:DateTime64(3)}),
t AS (
    SELECT if(ca.canonical_id != '', ca.canonical_id, t.customer_id) AS customer, t.occurred_at AS at
    FROM touchpoints AS t FINAL
    LEFT JOIN customer_aliases AS ca ON ca.customer_id = t.customer_id
    WHERE t.event_type IN ('order_placed', 'purchase')),
per_alert AS (
    SELECT a.alert_id, any(a.action) AS action, any(a.recovery) AS recovery, any(a.escalated) AS escalated,
           countIf(t.at > a.at AND t.at <= a.at + toIntervalDay({days:UInt32})) > 0 AS repurchased
    FROM a LEFT JOIN t ON t.customer = a.customer
    GROUP BY a.alert_id)
SELECT action, count() AS alerts,
       countIf(recovery = 'recovered') AS recovered,
       countIf(recovery = 'unrecovered') AS unrecovered,
       round(recovered / nullIf(recovered + unrecovered, 0), 3) AS recovery_rate,
       round(countIf(repurchased AND recovery != 'open') / nullIf(recovered + unrecovered, 0), 3) AS repurchase_rate,
       countIf(escalated = 1) AS escalated
FROM per_alert
GROUP BY action
ORDER BY alerts DESC, action
