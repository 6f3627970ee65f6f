"""Prometheus metrics shared by every cem process (names follow Prometheus conventions:
`cem_..._total` counters, `_seconds` in base units). Each process serves its own registry on
its metrics port (`serve`); which process exports which metric is in README "Operating cem",
and `tests/integration/test_observability.py` holds that table, the dashboard and the alert
rules to the names defined here."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS = Counter("cem_events_total", "Events read from (in) or delivered to (out) a Kafka topic",
                 ["topic", "direction"])
RECORDS = Counter("cem_records_total", "Kafka records read from (in) or delivered to (out) a topic",
                  ["topic", "direction"])
EVENTS_PER_RECORD = Histogram("cem_events_per_record", "Events carried by one Kafka record read", ["topic"],
                              buckets=(1, 10, 50, 100, 250, 500, 1000, 5000))
RECEIVED_AT_REPAIRED = Counter("cem_received_at_repaired_total", "Events whose received_at could not be a "
                               "receipt time (before 2000, far ahead, missing) and was set by ingest", ["topic"])
DEAD_LETTERS = Counter("cem_dead_letters_total", "Events or records sent to cem.dlq", ["reason"])
SINK_ROWS = Counter("cem_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
SINK_BATCH_ROWS = Histogram("cem_sink_batch_rows", "Rows per ClickHouse insert", ["table"],
                            buckets=(10, 100, 1_000, 10_000, 50_000, 100_000, 200_000))
SINK_INSERT_SECONDS = Histogram("cem_sink_insert_seconds", "Latency of one ClickHouse insert", ["table"])
SINK_ERRORS = Counter("cem_sink_insert_errors_total", "ClickHouse inserts that failed and were retried", ["table"])
FORWARD_RETRIES = Counter("cem_forward_retries_total", "Worker flushes whose output Kafka did not acknowledge "
                          "(broker away or timing out), retried", ["stage"])
REPLICA_RESTARTS = Counter("cem_identity_replica_restarts_total", "Times a worker's identity replica lost the "
                           "changelog (broker away) and reconnected")
MOMENTS = Counter("cem_moments_total", "Negative moments detected", ["rule"])
RECOVERIES = Counter("cem_moment_recoveries_total", "Moments decided: recovered or unrecovered", ["rule", "status"])
ALERTS = Counter("cem_alerts_total", "Alerts opened, by the team they are routed to", ["team", "severity"])
ALERT_LATENCY = Histogram("cem_alert_latency_seconds", "From the triggering event's receipt to its alert",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
WEBHOOKS = Counter("cem_webhook_deliveries_total",
                   "Alert webhook outcomes (delivered, retried, parked, reparked, expired)", ["outcome"])
WEBHOOKS_WAITING = Gauge("cem_webhook_parked", "Alert deliveries parked (or requeued) and waiting to be retried")
GC_PAUSE = Histogram("cem_gc_pause_seconds", "Python garbage-collection pauses, by generation", ["generation"],
                     buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
CONSUMER_LAG = Gauge("cem_consumer_lag_records", "Records behind the log end (uncommitted)", ["topic", "partition"])
WATERMARK_LAG = Gauge("cem_watermark_lag_seconds", "Wall clock minus the event-time watermark", ["partition"])
STATE_CUSTOMERS = Gauge("cem_state_customers", "Customers whose timeline a worker holds", ["partition"])
STATE_LIVE = Gauge("cem_state_live_customers",
                   "Customer timelines a worker holds as live objects (the rest spilled to disk)")
STATE_LIVE_BYTES = Gauge("cem_state_live_bytes", "Encoded size of the customer timelines a worker holds as live "
                         "objects (at most CEM_WORKER_LIVE_STATE_MB; in memory they take ~3.5x this)")
STATE_EVICTED = Gauge("cem_state_evictions", "Timelines spilled from memory to the worker's scratch store so far")
IDENTIFIERS = Gauge("cem_identity_identifiers", "Identifiers in the coordinator's identity graph")
HEAP_TRIMMED = Counter("cem_heap_trimmed_bytes_total", "Freed heap a worker handed back to the operating "
                       "system (RSS drop over each malloc_trim, CEM_WORKER_HEAP_TRIM_SECONDS)")
HEAP_TRIM_SECONDS = Histogram("cem_heap_trim_seconds", "Duration of one malloc_trim of a worker",
                              buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 1))
IDENTIFIERS_LIVE = Gauge("cem_identity_live_identifiers", "Identifiers the coordinator holds as live objects "
                         "(the rest spilled to disk, CEM_WORKER_LIVE_IDENTIFIERS)")


def events_in(topic: str, n: int) -> None:
    EVENTS.labels(topic, "in").inc(n)
    RECORDS.labels(topic, "in").inc()
    EVENTS_PER_RECORD.labels(topic).observe(n)


def events_out(topic: str, n: int) -> None:
    EVENTS.labels(topic, "out").inc(n)
    RECORDS.labels(topic, "out").inc()


def received_at_repaired(topic: str, n: int) -> None:
    RECEIVED_AT_REPAIRED.labels(topic).inc(n)


def dead_letter(reason: str) -> None:
    # Label by the reason's family (missing_field:event_id -> missing_field) to bound cardinality.
    DEAD_LETTERS.labels(reason.split(":", 1)[0]).inc()


def moment(rule: str, latency_seconds: float) -> None:
    MOMENTS.labels(rule).inc()
    if latency_seconds >= 0:
        ALERT_LATENCY.observe(latency_seconds)


def recovery(rule: str, status: str) -> None:
    RECOVERIES.labels(rule, status).inc()


def alert(team: str, severity: str) -> None:
    ALERTS.labels(team or "unrouted", severity or "unknown").inc()


def webhook(outcome: str) -> None:
    WEBHOOKS.labels(outcome).inc()


def webhooks_waiting(n: int) -> None:
    WEBHOOKS_WAITING.set(n)


def lag(topic: str, partition: int, records: int) -> None:
    CONSUMER_LAG.labels(topic, str(partition)).set(records)


def heap_trimmed(released: int, took: float) -> None:
    HEAP_TRIMMED.inc(released)
    HEAP_TRIM_SECONDS.observe(took)


def serve(port: int, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host)


def watch_gc(log_slower_than: float = 0.2) -> None:
    """Time every garbage collection of this process into cem_gc_pause_seconds and log the
    ones slower than `log_slower_than` seconds (they stall every agent of a worker)."""
    import gc
    import logging
    import time
    started: list[float] = [0.0]
    log = logging.getLogger("cem.gc")

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        GC_PAUSE.labels(str(info.get("generation"))).observe(took)
        if took > log_slower_than:
            log.warning("garbage collection of generation %s took %.0f ms (%s objects collected)",
                        info.get("generation"), took * 1000, info.get("collected"))

    gc.callbacks.append(callback)
