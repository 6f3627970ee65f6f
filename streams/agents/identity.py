"""The identity coordinator agent: cem.identity.links (one partition) → cem.touchpoints.

Before its first decision it replays the whole changelog (cem.identity.map) into its graph, so a
restarted or moved coordinator decides exactly as the one before it. Then records go through
`Coordinator.process` with the same group commit and acks-after-produce as ingest.
"""
from __future__ import annotations

import logging

import faust
from confluent_kafka import Producer

from cem import metrics
from cem.connectors.kafka_admin import partitions_of
from cem.connectors.publisher import BatchPublisher, producer_config
from cem.identity import IdentityGraph
from cem.schemas.registry import default_registry
from cem.settings import DLQ_TOPIC, RAW_TOPICS, TOUCHPOINTS_TOPIC, Settings
from cem.sinks.dlq import DeadLetters
from cem.streams.coordinator import Coordinator
from cem.streams.identity_log import load_graph
from .ingest import run_agent

log = logging.getLogger(__name__)


def attach_identity(app: faust.App, links: faust.TopicT, settings: Settings) -> None:
    state: dict[str, Coordinator] = {}

    def build() -> Coordinator:
        graph = IdentityGraph(shared=frozenset(settings.identity_shared_devices))
        n = load_graph(settings.kafka_bootstrap, graph)
        log.info("identity coordinator: replayed %d changelog records, %d identifiers", n, len(graph.owner))
        producer = Producer(producer_config(settings.kafka_bootstrap))
        registry = default_registry()
        parts = partitions_of(settings.kafka_bootstrap, [TOUCHPOINTS_TOPIC])
        raw_parts = partitions_of(settings.kafka_bootstrap, list(RAW_TOPICS.values()))
        publisher = BatchPublisher(producer, registry.latest("touchpoint").parsed, parts,
                                   max_events=settings.publisher_max_events, linger_ms=settings.publisher_linger_ms)
        dead = DeadLetters(producer, DLQ_TOPIC, "identity", on_dead=metrics.dead_letter)
        return Coordinator(graph, registry, producer, publisher, dead, TOUCHPOINTS_TOPIC, parts[TOUCHPOINTS_TOPIC],
                           lateness_ms=settings.allowed_lateness_ms,
                           idle_ms=int(settings.idle_timeout_seconds * 1000),
                           sources=graph.__dict__.get("source_marks"),
                           expected_sources=[f"{t}:{p}" for t, n in raw_parts.items() for p in range(n)])

    @app.agent(links, concurrency=1, name="identity")
    async def identity(stream: faust.StreamT) -> None:
        def make() -> Coordinator:
            if "c" not in state:
                state["c"] = build()
            return state["c"]
        await run_agent(stream, make)
