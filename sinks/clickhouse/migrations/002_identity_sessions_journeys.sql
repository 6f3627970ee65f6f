-- Identity decisions: one row per merge or refusal (status merged | refused | unmerged).
CREATE TABLE IF NOT EXISTS identity_merges
(
    merge_id     String,
    winner       String,
    loser        String,
    event_id     String,
    reason       String,
    status       LowCardinality(String),
    moved        Array(String),
    occurred_at  DateTime64(3, 'UTC'),
    decided_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY merge_id
SETTINGS non_replicated_deduplication_window = 10000;

-- Analysts: map any customer id that was merged away to the id that survived (follow up to
-- three merges; deeper chains are listed by the truth report and `cem query`).
CREATE VIEW IF NOT EXISTS customer_aliases AS
WITH m AS (SELECT loser, argMax(winner, decided_at) AS winner FROM identity_merges FINAL
           WHERE status = 'merged' GROUP BY loser)
SELECT m1.loser AS customer_id,
       if(m3.winner != '', m3.winner, if(m2.winner != '', m2.winner, m1.winner)) AS canonical_id
FROM m AS m1 LEFT JOIN m AS m2 ON m2.loser = m1.winner LEFT JOIN m AS m3 ON m3.loser = m2.winner;

-- Sessions per customer, channel and subject; every change is a new version (open → closed),
-- and a session renamed by an out-of-order event leaves a deleted version of its old id.
CREATE TABLE IF NOT EXISTS sessions
(
    session_id   String,
    customer_id  String,
    channel      LowCardinality(String),
    subject      String,
    started_at   DateTime64(3, 'UTC'),
    ended_at     DateTime64(3, 'UTC'),
    events       UInt32,
    event_ids    Array(String),
    event_types  Map(String, UInt32),
    store_id     Nullable(String),
    status       LowCardinality(String),
    late         UInt8,
    is_deleted   UInt8,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (session_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS journeys
(
    journey_id   String,
    customer_id  String,
    started_at   DateTime64(3, 'UTC'),
    ended_at     DateTime64(3, 'UTC'),
    channels     Array(String),
    sessions     UInt32,
    session_ids  Array(String),
    outcome      LowCardinality(String),
    moments      Array(String),
    status       LowCardinality(String),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (journey_id)
SETTINGS non_replicated_deduplication_window = 10000;
