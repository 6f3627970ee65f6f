-- Hourly/daily rollups for dashboards and the query pack (AggregatingMergeTree, filled by
-- materialized views on every insert into the base tables).
--
-- Contract: a rollup equals the same aggregate over the base table read with FINAL, including
-- replays and versioned rows, because every measure is a *distinct count of an id*
-- (uniqExact states): a touchpoint landed twice after a worker crash, or a moment emitted again
-- with a new version, counts once. Read with the -Merge combinators, e.g.
--   SELECT channel, uniqExactMerge(events) FROM rollup_events_hourly GROUP BY channel
-- One exception, by construction: a state that is not final can be left. rollup_moments_hourly's
-- recovered/unrecovered count moments that were *ever* recorded so; a moment re-emitted with
-- another status (seen around identity merges: recovered on the merged-away profile, open again
-- on the winner) counts in both, so these may exceed the FINAL counts by a few (tested: within
-- 1 % of the moments). Closed journeys and ended calls are final. Rows written before this
-- migration are not rolled up (forward-only; backfill with INSERT INTO rollup_… SELECT … if needed).

CREATE TABLE IF NOT EXISTS rollup_events_hourly
(
    hour        DateTime('UTC'),
    channel     LowCardinality(String),
    store_id    String,
    event_type  LowCardinality(String),
    events      AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (hour, channel, store_id, event_type);

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_events_hourly_mv TO rollup_events_hourly AS
SELECT toStartOfHour(occurred_at) AS hour, channel, ifNull(store_id, '') AS store_id, event_type,
       uniqExactState(event_id) AS events
FROM touchpoints
GROUP BY hour, channel, store_id, event_type;

-- Moments by rule/channel/store/severity, with their recovery status.
CREATE TABLE IF NOT EXISTS rollup_moments_hourly
(
    hour         DateTime('UTC'),
    rule         LowCardinality(String),
    channel      LowCardinality(String),
    store_id     String,
    severity     LowCardinality(String),
    moments      AggregateFunction(uniqExact, String),
    recovered    AggregateFunction(uniqExact, String),
    unrecovered  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (hour, rule, channel, store_id, severity);

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_moments_hourly_mv TO rollup_moments_hourly AS
SELECT toStartOfHour(occurred_at) AS hour, rule, channel, ifNull(store_id, '') AS store_id, severity,
       uniqExactState(moment_id) AS moments,
       uniqExactStateIf(moment_id, recovery_status = 'recovered') AS recovered,
       uniqExactStateIf(moment_id, recovery_status = 'unrecovered') AS unrecovered
FROM negative_moments
GROUP BY hour, rule, channel, store_id, severity;

-- NPS (promoters 9-10, detractors 0-6) and CSAT (share of 4-5 on 1-5) by day/channel/store.
CREATE TABLE IF NOT EXISTS rollup_feedback_daily
(
    day             Date,
    channel         LowCardinality(String),
    store_id        String,
    nps_responses   AggregateFunction(uniqExact, String),
    promoters       AggregateFunction(uniqExact, String),
    detractors      AggregateFunction(uniqExact, String),
    csat_responses  AggregateFunction(uniqExact, String),
    csat_satisfied  AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, channel, store_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_feedback_daily_mv TO rollup_feedback_daily AS
SELECT toDate(occurred_at) AS day, channel, ifNull(store_id, '') AS store_id,
       uniqExactStateIf(event_id, feedback.nps IS NOT NULL) AS nps_responses,
       uniqExactStateIf(event_id, feedback.nps >= 9) AS promoters,
       uniqExactStateIf(event_id, feedback.nps <= 6) AS detractors,
       uniqExactStateIf(event_id, feedback.csat IS NOT NULL) AS csat_responses,
       uniqExactStateIf(event_id, feedback.csat >= 4) AS csat_satisfied
FROM touchpoints
WHERE event_type = 'survey_response'
GROUP BY day, channel, store_id;

-- Closed journeys by day, outcome and the channels used (in order of first use, 'web>phone').
CREATE TABLE IF NOT EXISTS rollup_journeys_daily
(
    day        Date,
    outcome    LowCardinality(String),
    channels   String,
    journeys   AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, outcome, channels);

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_journeys_daily_mv TO rollup_journeys_daily AS
SELECT toDate(ended_at) AS day, outcome, arrayStringConcat(channels, '>') AS channels,
       uniqExactState(journey_id) AS journeys
FROM journeys
WHERE status = 'closed'
GROUP BY day, outcome, channels;

-- Contacts (phone calls) by day and channel: calls ended and calls resolved on the call. Repeat
-- contacts are the repeat_contact moments in rollup_moments_hourly; first-contact resolution
-- over a window needs the customer's next contact, so it is the pack query contact_resolution.
CREATE TABLE IF NOT EXISTS rollup_contacts_daily
(
    day        Date,
    channel    LowCardinality(String),
    contacts   AggregateFunction(uniqExact, String),
    resolved   AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, channel);

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_contacts_daily_mv TO rollup_contacts_daily AS
SELECT toDate(occurred_at) AS day, channel,
       uniqExactState(event_id) AS contacts,
       uniqExactStateIf(event_id, ifNull(phone.resolved, false)) AS resolved
FROM touchpoints
WHERE event_type = 'call_ended'
GROUP BY day, channel;
