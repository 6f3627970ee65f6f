-- Every touchpoint from every channel, one row per event_id.
-- Columns mirror schemas/touchpoint.avsc so Avro container files land with FORMAT Avro, undecoded
-- by Python. Replays are absorbed twice: insert dedup tokens (same batch again) and
-- ReplacingMergeTree on event_id within the customer's sort key (same event in another batch):
-- query with FINAL, or through the view touchpoints_v, for exact counts.
CREATE TABLE IF NOT EXISTS touchpoints
(
    event_id      String,
    event_type    LowCardinality(String),
    channel       LowCardinality(String),
    occurred_at   DateTime64(3, 'UTC'),
    received_at   DateTime64(3, 'UTC'),
    source        LowCardinality(String),
    identifiers   Tuple(anonymous_id Nullable(String), device_id Nullable(String),
                        customer_id Nullable(String), loyalty_id Nullable(String),
                        email_hash Nullable(String), phone_hash Nullable(String),
                        order_id Nullable(String)),
    store_id      Nullable(String),
    location      Nullable(String),
    web           Tuple(url Nullable(String), referrer Nullable(String), query Nullable(String),
                        results_count Nullable(Int32), element Nullable(String), x Nullable(Int32),
                        y Nullable(Int32), product_id Nullable(String), amount_cents Nullable(Int64),
                        currency Nullable(String), error_code Nullable(String)),
    store         Tuple(terminal_id Nullable(String), product_id Nullable(String),
                        wait_seconds Nullable(Int32), amount_cents Nullable(Int64),
                        currency Nullable(String), items Nullable(Int32)),
    phone         Tuple(call_id Nullable(String), ivr_step Nullable(String), hold_seconds Nullable(Int32),
                        queue Nullable(String), agent_id Nullable(String), reason Nullable(String),
                        resolved Nullable(Bool), duration_seconds Nullable(Int32)),
    returns       Tuple(rma_id Nullable(String), reason Nullable(String), product_id Nullable(String),
                        amount_cents Nullable(Int64), currency Nullable(String)),
    feedback      Tuple(survey_id Nullable(String), nps Nullable(Int32), csat Nullable(Int32),
                        rating Nullable(Int32), comment Nullable(String)),
    cem           Tuple(customer_id Nullable(String), late Nullable(Bool), processed_at Nullable(Int64)),
    customer_id   String MATERIALIZED ifNull(cem.customer_id, ''),
    landed_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (customer_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
