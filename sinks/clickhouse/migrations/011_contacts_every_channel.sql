-- touchpoint schema v4: email attributes and the `contact` record (topic, case, resolution of a
-- customer-service contact on any channel). Older records land both as NULLs.
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS email Tuple(thread_id Nullable(String), mailbox Nullable(String)) AFTER feedback;
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS contact Tuple(topic Nullable(String), case_id Nullable(String),
                                                               resolved Nullable(Bool), agent_id Nullable(String)) AFTER email;

-- rollup_contacts_daily counts contacts on every channel from here on: the events that close a
-- contact (a call, a chat, service's email reply, a service-desk visit) and those resolved.
-- Days landed before this migration hold calls only; to recount them, TRUNCATE
-- rollup_contacts_daily and INSERT INTO it the SELECT below over touchpoints.
DROP VIEW IF EXISTS rollup_contacts_daily_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_contacts_daily_mv TO rollup_contacts_daily AS
SELECT toDate(occurred_at) AS day, channel,
       uniqExactState(event_id) AS contacts,
       uniqExactStateIf(event_id, ifNull(contact.resolved, ifNull(phone.resolved, false))) AS resolved
FROM touchpoints
WHERE event_type IN ('call_ended', 'chat_ended', 'email_sent', 'service_desk_visit')
GROUP BY day, channel;
