-- summary: Customers moving between lifecycle stages (e.g. satisfied -> loyal, at_risk -> lost)
-- param: since DateTime64(3) = now-7d
-- One row per (from, to) move since `since`, counting customers after identity merges;
-- from_stage '(none)' is a customer first seen.
SELECT ifNull(l.previous_stage, '(none)') AS from_stage, l.stage AS to_stage,
       uniqExact(if(a.canonical_id != '', a.canonical_id, l.customer_id)) AS customers
FROM customer_lifecycle AS l FINAL
LEFT JOIN customer_aliases AS a ON a.customer_id = l.customer_id
WHERE l.changed_at >= {since:DateTime64(3)} AND l.stage != 'merged'
GROUP BY from_stage, to_stage
ORDER BY customers DESC, from_stage, to_stage
