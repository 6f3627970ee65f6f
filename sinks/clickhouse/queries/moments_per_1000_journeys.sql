-- summary: Negative moments per 1,000 journeys that used each channel (and store)
-- param: since DateTime64(3) = 1970-01-01 00:00:00
-- A journey counts for a channel/store when one of its sessions is there; a moment counts for
-- the channel/store it happened in. Sorted worst first.
WITH
    js AS (
        SELECT j.journey_id, s.channel, ifNull(s.store_id, '') AS store_id
        FROM (SELECT journey_id, arrayJoin(session_ids) AS session_id
              FROM journeys FINAL WHERE started_at >= {since:DateTime64(3)}) AS j
        INNER JOIN (SELECT session_id, channel, store_id FROM sessions FINAL WHERE is_deleted = 0) AS s
            ON s.session_id = j.session_id),
    jc AS (SELECT channel, store_id, uniqExact(journey_id) AS journeys FROM js GROUP BY channel, store_id),
    mc AS (SELECT channel, ifNull(store_id, '') AS store_id, count() AS moments
           FROM negative_moments FINAL WHERE occurred_at >= {since:DateTime64(3)}
           GROUP BY channel, store_id)
SELECT jc.channel AS channel, jc.store_id AS store_id, jc.journeys AS journeys,
       ifNull(mc.moments, 0) AS moments, round(1000 * moments / journeys, 1) AS per_1000_journeys
FROM jc LEFT JOIN mc ON mc.channel = jc.channel AND mc.store_id = jc.store_id
ORDER BY per_1000_journeys DESC, channel, store_id
