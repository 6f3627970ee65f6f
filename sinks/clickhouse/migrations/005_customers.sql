-- Customer lifecycle (issue 6): every stage change with its reason (customer_lifecycle, landed
-- from cem.customers) and the current stage per customer (customers, kept by a materialized
-- view; ReplacingMergeTree on the change's version, so a replayed insert changes nothing).
-- Stages: new, active, satisfied, loyal, advocate, at_risk, lost; 'merged' for a profile merged
-- into another (reason names the surviving customer_id).
CREATE TABLE IF NOT EXISTS customer_lifecycle
(
    customer_id      String,
    stage            LowCardinality(String),
    previous_stage   LowCardinality(Nullable(String)),
    reason           String,
    changed_at       DateTime64(3, 'UTC'),
    purchases_90d    UInt32,
    open_moments     UInt32,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (customer_id, changed_at, stage)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS customers AS customer_lifecycle
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS customers_current TO customers AS
SELECT customer_id, stage, previous_stage, reason, changed_at, purchases_90d, open_moments, version
FROM customer_lifecycle;
