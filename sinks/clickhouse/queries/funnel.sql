-- summary: Funnel drop-off search -> cart -> checkout -> order, per channel (sessions)
-- param: since DateTime64(3) = 1970-01-01 00:00:00
-- Each step counts the sessions that also reached every earlier step; an order is
-- order_placed (web) or purchase (store). The *_rate columns are step-to-step conversion.
WITH s AS (
    SELECT channel,
           mapContains(event_types, 'search') AS s1,
           s1 AND mapContains(event_types, 'add_to_cart') AS s2,
           s2 AND mapContains(event_types, 'checkout_started') AS s3,
           s3 AND (mapContains(event_types, 'order_placed') OR mapContains(event_types, 'purchase')) AS s4
    FROM sessions FINAL
    WHERE is_deleted = 0 AND started_at >= {since:DateTime64(3)})
SELECT channel, count() AS sessions, countIf(s1) AS searched, countIf(s2) AS added_to_cart,
       countIf(s3) AS checked_out, countIf(s4) AS ordered,
       round(added_to_cart / nullIf(searched, 0), 3) AS cart_rate,
       round(checked_out / nullIf(added_to_cart, 0), 3) AS checkout_rate,
       round(ordered / nullIf(checked_out, 0), 3) AS order_rate
FROM s
GROUP BY channel
ORDER BY channel
