-- summary: One customer's journey across channels: every touchpoint in time order, with moments
-- param: customer String
-- `customer` may be any id the customer ever had (a merged-away profile included): the
-- timeline covers every profile that resolves to the same canonical customer.
WITH coalesce(nullIf((SELECT any(canonical_id) FROM customer_aliases WHERE customer_id = {customer:String}), ''),
              {customer:String}) AS cid
SELECT t.occurred_at AS occurred_at, t.channel AS channel, t.event_type AS event_type,
       ifNull(t.store_id, '') AS store_id, t.event_id AS event_id,
       arrayStringConcat(mm.rules, ',') AS moments
FROM touchpoints AS t FINAL
LEFT JOIN (SELECT arrayJoin(evidence) AS event_id, groupUniqArray(rule) AS rules
           FROM negative_moments FINAL GROUP BY event_id) AS mm ON mm.event_id = t.event_id
WHERE t.customer_id = cid OR t.customer_id IN (SELECT customer_id FROM customer_aliases WHERE canonical_id = cid)
ORDER BY occurred_at, event_id
