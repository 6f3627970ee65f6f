"""Faust app factory for `cem worker` (no global app: each call builds a fresh one).

Faust as DESIGN.md "Faust, as used here" prescribes: raw bytes in (records of either shape),
agent concurrency 1, manual acks after the downstream produce succeeded, topics pre-created,
no GlobalTable, no Faust windows or timers for event time.
"""
from __future__ import annotations

import faust

from cem.kafka.connection import KafkaConnection
from cem.settings import IDENTITY_LINKS_TOPIC, RAW_TOPICS, Settings, stage_topic
from .agents.customers import attach_customers
from .agents.identity import attach_identity
from .agents.ingest import attach_ingest


def create_app(settings: Settings, kafka: KafkaConnection) -> faust.App:
    """A Faust app with every agent, reaching Kafka through `kafka` (its own clients and the
    agents' confluent-kafka producers and consumers alike)."""
    app = faust.App(
        settings.app_id,
        broker=kafka.faust_broker(),
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,  # Faust creates its table changelog; cem topics exist already
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=500,
        stream_buffer_maxsize=256,
        broker_commit_every=1000,
        broker_commit_interval=0.25,
        web_enabled=False,
        producer_acks=-1,
        broker_credentials=kafka.faust_credentials(),
        broker_session_timeout=settings.worker_session_timeout_seconds,  # a killed worker's partitions move this soon
        broker_heartbeat_interval=min(3.0, settings.worker_session_timeout_seconds / 4),  # several beats per timeout
    )
    raw = app.topic(*RAW_TOPICS.values(), key_type=bytes, value_type=bytes)
    attach_ingest(app, raw, settings, kafka)
    attach_identity(app, app.topic(IDENTITY_LINKS_TOPIC, key_type=bytes, value_type=bytes), settings, kafka)
    attach_customers(app, app.topic(stage_topic(settings), key_type=bytes, value_type=bytes), settings, kafka)
    return app
