-- Consent and erasure (README "Privacy: consent and erasure").
-- touchpoint schema v3: `consent`; an event sent with consent = false lands without identifiers.
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS consent Nullable(Bool) AFTER identifiers;

-- One row per erasure, written by `cem sink` once every table was cleaned. It holds no
-- identifier: only how many were removed and one salted SHA-256 over all of them (with the salt
-- kept here, whoever holds the same identifiers can check the record; nobody can read one out of
-- it). An erasure replayed after a crash keeps its first row.
CREATE TABLE IF NOT EXISTS privacy_erasures
(
    erasure_id          String,
    requested_at        DateTime64(3, 'UTC'),
    completed_at        DateTime64(3, 'UTC'),
    requester           String,
    status              LowCardinality(String),
    profiles_removed    UInt32,
    identifiers_removed UInt32,
    identifiers_digest  String,
    salt                String,
    tables              Array(String),
    rows_deleted        Map(String, UInt64)
)
ENGINE = ReplacingMergeTree(completed_at)
ORDER BY erasure_id;
