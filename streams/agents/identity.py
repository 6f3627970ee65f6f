"""The identity coordinator agent: cem.identity.links (one partition) → cem.touchpoints.

Before its first decision it replays the whole changelog (cem.identity.map) into its graph, so a
restarted or moved coordinator decides exactly as the one before it. Then records go through
`Coordinator.process` with the same group commit and acks-after-produce as ingest.
"""
from __future__ import annotations

import logging
import threading
import time

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


class Backlog(threading.Thread):
    """Which raw partitions still have input the worker group has not committed (a source with
    a backlog is busy, never idle). Refreshed by its own thread every `every` seconds, so the
    coordinator's loop never waits on the broker; calling it returns the latest answer."""

    def __init__(self, bootstrap: str, group: str, parts: dict[str, int], every: float = 1.0):
        super().__init__(name="cem-backlog", daemon=True)
        self._servers = bootstrap
        self._group = group
        self._names = [f"{t}:{p}" for t, n in parts.items() for p in range(n)]
        self._parts = parts
        self._every = every
        self._busy: set[str] = set(self._names)  # until the first answer: all busy (safe side)
        self.start()

    def __call__(self) -> set[str]:
        return self._busy

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": self._servers, "group.id": self._group, "enable.auto.commit": False})
        tps = [TopicPartition(t, p) for t, n in self._parts.items() for p in range(n)]
        while True:
            try:
                busy = set()
                for tp in c.committed(tps, timeout=10):
                    low, high = c.get_watermark_offsets(tp, timeout=10, cached=False)
                    if high > max(tp.offset, low):
                        busy.add(f"{tp.topic}:{tp.partition}")
                self._busy = busy
            except Exception as err:  # noqa: BLE001 - unknown: keep everything busy (safe side)
                log.warning("backlog check failed, holding event time: %s", err)
                self._busy = set(self._names)
            time.sleep(self._every)


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
                           expected_sources=[f"{t}:{p}" for t, n in raw_parts.items() for p in range(n)],
                           backlog=Backlog(settings.kafka_bootstrap, settings.app_id, raw_parts,
                                           settings.tick_seconds))

    @app.agent(links, concurrency=1, name="identity")
    async def identity(stream: faust.StreamT) -> None:
        def make() -> Coordinator:
            if "c" not in state:
                state["c"] = build()
            return state["c"]
        await run_agent(stream, make)
