-- Negative moments: one row per moment and recovery status (open → recovered | unrecovered).
CREATE TABLE IF NOT EXISTS negative_moments
(
    moment_id          String,
    rule               LowCardinality(String),
    kind               LowCardinality(String),
    severity           LowCardinality(String),
    team               LowCardinality(String),
    customer_id        String,
    channel            LowCardinality(String),
    store_id           Nullable(String),
    evidence           Array(String),
    occurred_at        DateTime64(3, 'UTC'),
    detected_at        DateTime64(3, 'UTC'),
    recovery_status    LowCardinality(String),
    recovered_by       Nullable(String),
    recovery_deadline  DateTime64(3, 'UTC'),
    version            UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY moment_id
SETTINGS non_replicated_deduplication_window = 10000;

-- Alerts routed to the owning team; the id is derived from the moment, so a replay never pages twice.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id         String,
    moment_id        String,
    rule             LowCardinality(String),
    team             LowCardinality(String),
    severity         LowCardinality(String),
    customer_id      String,
    channel          LowCardinality(String),
    store_id         Nullable(String),
    status           LowCardinality(String),
    recovery_status  LowCardinality(String),
    delivery         Array(String),
    created_at       DateTime64(3, 'UTC'),
    latency_ms       Nullable(Float64),
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id
SETTINGS non_replicated_deduplication_window = 10000;
