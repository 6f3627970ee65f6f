-- summary: First-contact resolution and repeat-contact rate of contacts on every channel, by channel
-- param: since DateTime64(3) = 1970-01-01 00:00:00
-- param: within_days UInt32 = 7
-- A contact is an event that closes one: a call that ended, a chat that ended, service's email
-- reply (to an email or a contact form), a service-desk visit. It is resolved when it says so
-- (`contact.resolved`, or a call's `phone.resolved`). It is a repeat-causing contact when the
-- same customer (after identity merges) has another contact, on any channel, within
-- `within_days`; it is resolved on first contact when it ended resolved and no further contact
-- followed within that window. `channel` is the channel of the contact itself.
WITH contacts AS (
    SELECT t.event_id AS event_id, t.channel AS channel, t.occurred_at AS occurred_at,
           ifNull(t.contact.resolved, ifNull(t.phone.resolved, false)) AS resolved,
           if(a.canonical_id != '', a.canonical_id, t.customer_id) AS customer
    FROM touchpoints AS t FINAL
    LEFT JOIN customer_aliases AS a ON a.customer_id = t.customer_id
    WHERE t.event_type IN ('call_ended', 'chat_ended', 'email_sent', 'service_desk_visit')
      AND t.occurred_at >= {since:DateTime64(3)}),
nxt AS (
    SELECT channel, resolved, occurred_at,
           leadInFrame(occurred_at) OVER w AS next_at,
           leadInFrame(event_id) OVER w AS next_id
    FROM contacts
    WINDOW w AS (PARTITION BY customer ORDER BY occurred_at, event_id
                 ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING))
SELECT channel, count() AS contacts, countIf(resolved) AS resolved_on_contact,
       countIf(next_id != '' AND next_at <= occurred_at + toIntervalDay({within_days:UInt32})) AS followed_by_another,
       round(countIf(resolved AND NOT (next_id != '' AND next_at <= occurred_at + toIntervalDay({within_days:UInt32}))) / contacts, 3)
           AS first_contact_resolution,
       round(followed_by_another / contacts, 3) AS repeat_contact_rate
FROM nxt
GROUP BY channel
ORDER BY channel
