"""Entry point of the landing role (`cem sink`): builds the Landing from settings and runs it
until SIGTERM/SIGINT, flushing what is pending before it exits."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from cem import metrics
from cem.shutdown import stop_requested
from cem.kafka.connection import KafkaConnection
from cem.kafka.publisher import producer_config
from cem.schemas.registry import default_registry
from cem.settings import (ALERTS_TOPIC, CUSTOMERS_TOPIC, DLQ_TOPIC, IDENTITY_MERGES_TOPIC, MOMENTS_TOPIC,
                          JOURNEYS_TOPIC, SESSIONS_TOPIC, TOUCHPOINTS_TOPIC, Settings)
from .clickhouse.client import ClickHouse, connect_settings
from .clickhouse.migrations import apply
from cem.kafka.dlq import DeadLetters
from .erasure import Eraser
from .landing import Landing, LandingCounts, consumer_config
from .query_server import serve_queries

#: Output topic -> ClickHouse table.
TABLES = {TOUCHPOINTS_TOPIC: "touchpoints", SESSIONS_TOPIC: "sessions", JOURNEYS_TOPIC: "journeys",
          IDENTITY_MERGES_TOPIC: "identity_merges", MOMENTS_TOPIC: "negative_moments", ALERTS_TOPIC: "alerts",
          CUSTOMERS_TOPIC: "customer_lifecycle"}
log = logging.getLogger(__name__)


class OutageSwitch:
    """Chaos testing (`cem chaos`): the sink's ClickHouse client, whose inserts fail like an
    unreachable server while `switch` exists. Everything else passes through."""

    def __init__(self, client: ClickHouse, switch: Path):
        self._client = client
        self._switch = switch

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:
        if self._switch.exists():
            raise ConnectionError("ClickHouse unavailable (injected by cem chaos)")
        return self._client.raw_insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def run_sink(settings: Settings, *, group: str | None = None, idle_exit: float | None = None,
             topics: dict[str, str] | None = None) -> LandingCounts:
    should_stop = stop_requested()
    metrics.serve(settings.sink_metrics_port, settings.metrics_host)
    client = connect_settings(settings)
    apply(client)
    if settings.fault_injection_dir is not None:
        client = OutageSwitch(client, settings.fault_injection_dir / "clickhouse_down")
    queries = serve_queries(lambda: connect_settings(settings), settings.clickhouse, settings.sink_query_port)
    kafka = KafkaConnection.from_settings(settings)
    producer = Producer(producer_config(kafka))
    consumer = Consumer(consumer_config(kafka, group or f"{settings.app_id}-landing"))
    landing = Landing(client, consumer, DeadLetters(producer, DLQ_TOPIC, "landing", metrics.dead_letter),
                      default_registry(), topics or TABLES, max_rows=settings.sink_max_rows,
                      max_seconds=settings.sink_max_seconds,
                      insert_threads=settings.sink_insert_threads,
                      progress_seconds=settings.sink_progress_seconds, eraser=Eraser(client))
    try:
        counts = landing.run(should_stop, idle_exit=idle_exit)
    finally:
        if producer.flush(30):
            log.error("some dead letters were not acknowledged by Kafka")
        if queries is not None:
            queries.close()
        client.close()
    return counts
