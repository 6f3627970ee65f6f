"""Prometheus metrics shared by every cem process (names follow Prometheus conventions:
`cem_..._total` counters, base units). Exposed with `serve(port)`; each process serves its own."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("cem_events_in_total", "Events read from a topic", ["topic"])
RECORDS_IN = Counter("cem_records_in_total", "Kafka records read from a topic", ["topic"])
DEAD_LETTERS = Counter("cem_dead_letters_total", "Events or records sent to cem.dlq", ["reason"])
SINK_ROWS = Counter("cem_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
SINK_BATCH_ROWS = Histogram("cem_sink_batch_rows", "Rows per ClickHouse insert", ["table"],
                            buckets=(10, 100, 1_000, 10_000, 50_000, 100_000, 200_000))
SINK_INSERT_SECONDS = Histogram("cem_sink_insert_seconds", "Latency of one ClickHouse insert", ["table"])
SINK_ERRORS = Counter("cem_sink_insert_errors_total", "ClickHouse inserts that failed and were retried", ["table"])
MOMENTS = Counter("cem_moments_total", "Negative moments detected", ["rule"])
ALERT_LATENCY = Histogram("cem_alert_latency_seconds", "From the triggering event's receipt to its alert",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
WEBHOOKS = Counter("cem_webhook_deliveries_total", "Alert webhook outcomes (delivered, retried, parked)",
                   ["outcome"])
CONSUMER_LAG = Gauge("cem_consumer_lag_records", "Records behind the log end", ["topic", "partition"])


def events_in(topic: str, n: int) -> None:
    EVENTS_IN.labels(topic).inc(n)
    RECORDS_IN.labels(topic).inc()


def dead_letter(reason: str) -> None:
    # Label by the reason's family (missing_field:event_id -> missing_field) to bound cardinality.
    DEAD_LETTERS.labels(reason.split(":", 1)[0]).inc()


def moment(rule: str, latency_seconds: float) -> None:
    MOMENTS.labels(rule).inc()
    if latency_seconds >= 0:
        ALERT_LATENCY.observe(latency_seconds)


def webhook(outcome: str) -> None:
    WEBHOOKS.labels(outcome).inc()


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
