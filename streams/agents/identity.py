"""The identity coordinator agent: cem.identity.links (one partition) → cem.touchpoints.

Before its first decision it replays the whole changelog (cem.identity.map) into its graph, so a
restarted or moved coordinator decides exactly as the one before it. Then records go through
`Coordinator.process` with the same group commit and acks-after-produce as ingest.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Callable

import faust
from confluent_kafka import Producer

from cem import metrics
from cem.kafka.admin import partitions_of
from cem.kafka.publisher import BatchPublisher, producer_config
from cem.identity import IdentityGraph
from cem.schemas.registry import default_registry
from cem.settings import (DLQ_TOPIC, IDENTITY_LINKS_TOPIC, RAW_TOPICS, STAGE_TOPIC, TOUCHPOINTS_TOPIC, Settings,
                          stage_input)
from cem.kafka.dlq import UNKNOWN_KEY, DeadLetters, UnknownKey
from cem.streams.coordinator import CONTROL_HEADER, Coordinator
from cem.streams.identity_log import bounded_graph, load_graph, merge_log
from .ingest import run_agent
from cem.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)


class Ticker(threading.Thread):
    """Every `every` seconds: which raw partitions still have input the worker group has not
    committed (busy: never idle), written with the wall clock as one `tick` control record on
    cem.identity.links partition 0, the coordinator's input.

    The busy set travels *in* the tick, so the coordinator judges idleness on one consistent
    picture as of the tick's write time: the reports before it in the stream and the backlog at
    that moment. (Asking for the backlog when a lagging coordinator *reads* the tick mixed an old
    picture of the reports with a new one of the backlog: a source whose reports were still
    queued behind the tick, but whose raw input was consumed meanwhile, was taken for idle, and
    the events it had routed through the coordinator arrived behind the watermark as late.)
    A failed check marks every partition busy (holds event time, never advances it wrongly) and
    says so (`unknown`): the coordinator then restarts every source's idle clock, so the time the
    broker was away does not count as the sources' silence (see `Coordinator.process`)."""

    def __init__(self, kafka: KafkaConnection, group: str, parts: dict[str, int], every: float,
                 identifiers: Callable[[], tuple[int, int]] = lambda: (0, 0)):
        super().__init__(name="cem-ticker", daemon=True)
        self._kafka = kafka
        self._group = group
        self._parts = parts
        self._every = every
        self._identifiers = identifiers
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition
        consumer = Consumer(self._kafka.client_config(**{"group.id": self._group, "enable.auto.commit": False}))
        producer = Producer(producer_config(self._kafka))
        tps = [TopicPartition(t, p) for t, n in self._parts.items() for p in range(n)]
        while not self.stop.wait(self._every):
            try:
                busy = []
                for tp in consumer.committed(tps, timeout=10):
                    low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                    if high > max(tp.offset, low):
                        busy.append(f"{tp.topic}:{tp.partition}")
                    metrics.lag(tp.topic, tp.partition, high - max(tp.offset, low))
                total, live = self._identifiers()
                metrics.IDENTIFIERS.set(total)
                metrics.IDENTIFIERS_LIVE.set(live)
            except Exception as err:  # noqa: BLE001 - unknown: keep everything busy (safe side)
                log.warning("backlog check failed, holding event time: %s", err)
                busy = [f"{tp.topic}:{tp.partition}" for tp in tps]
                unknown = True
            else:
                unknown = False
            body: dict = {"control": "tick", "wall": int(time.time() * 1000), "busy": busy}
            if unknown:
                body["unknown"] = True
            producer.produce(IDENTITY_LINKS_TOPIC, value=json.dumps(body).encode(), partition=0,
                             headers=[(CONTROL_HEADER, b"tick")])
            producer.poll(0)
        producer.flush(5)
        consumer.close()


class CoordinatorSlot:
    """The coordinator of this worker process, while it holds cem.identity.links partition 0.

    With several workers in one group that partition — the single writer of the identifier
    graph — may move. When it is revoked the coordinator and its ticker are dropped; when it
    comes back (here or on another worker) a new one is built, replaying the whole changelog, so
    it decides with every decision the other worker appended meanwhile (a coordinator kept from
    before would decide on a stale graph: two writers). Records it had not acked are redelivered
    to the new owner from the committed offset."""

    def __init__(self, build: Callable[[], tuple["Coordinator", "Ticker"]]):
        self._build = build
        self._lock = threading.Lock()
        self.coordinator: Coordinator | None = None
        self._ticker: Ticker | None = None

    def ensure(self) -> "CoordinatorSlot":
        with self._lock:
            if self.coordinator is None:
                self.coordinator, self._ticker = self._build()
        return self

    def drop(self) -> None:
        with self._lock:
            if self._ticker is not None:
                self._ticker.stop.set()
            self.coordinator, self._ticker = None, None

    def process(self, value: bytes | None, topic: str, partition: int, offset: int,
                headers: list | None = None, key: bytes | None | UnknownKey = UNKNOWN_KEY) -> None:
        c = self.coordinator or self.ensure().coordinator
        c.process(value, topic, partition, offset, headers, key)  # type: ignore[union-attr]

    def flush(self) -> None:
        c = self.coordinator
        if c is not None:
            c.flush()


def attach_identity(app: faust.App, links: faust.TopicT, settings: Settings, kafka: KafkaConnection) -> None:
    def build() -> tuple[Coordinator, Ticker]:
        graph = bounded_graph(IdentityGraph, settings.worker_live_identifiers,
                              frozenset(settings.identity_shared_devices))
        n = load_graph(kafka, graph)
        log.info("identity coordinator: replayed %d changelog records, %d identifiers", n, len(graph.owner))
        producer = Producer(producer_config(kafka))
        registry = default_registry()
        parts = partitions_of(kafka, [TOUCHPOINTS_TOPIC, STAGE_TOPIC])
        raw_parts = partitions_of(kafka, list(RAW_TOPICS.values()))
        publisher = BatchPublisher(producer, registry.latest("touchpoint").parsed, parts,
                                   max_events=settings.publisher_max_events, linger_ms=settings.publisher_linger_ms)
        dead = DeadLetters(producer, DLQ_TOPIC, "identity", on_dead=metrics.dead_letter)
        ticker = Ticker(kafka, settings.app_id, raw_parts, settings.tick_seconds,
                        lambda: (len(graph.owner), getattr(graph.owner, "live", len(graph.owner))))
        ticker.start()
        return Coordinator(graph, registry, producer, publisher, dead, TOUCHPOINTS_TOPIC, parts[TOUCHPOINTS_TOPIC],
                           lateness_ms=settings.allowed_lateness_ms,
                           idle_ms=int(settings.idle_timeout_seconds * 1000),
                           quiet_ms=int((settings.all_quiet_seconds or settings.idle_timeout_seconds) * 1000),
                           sources=graph.__dict__.get("source_marks"),
                           expected_sources=[f"{t}:{p}" for t, n in raw_parts.items() for p in range(n)],
                           merge_log=lambda: merge_log(kafka), stage_topic=stage_input(settings)), ticker

    slot = CoordinatorSlot(build)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: object, assigned: set, **kwargs: object) -> None:
        # the new assignment as a whole (a rebalance revokes everything first, eagerly): kept
        # here, the graph is current (no one else held the partition meanwhile); gone, drop it
        holds = any(tp.topic == IDENTITY_LINKS_TOPIC for tp in assigned)
        if not holds and slot.coordinator is not None:
            log.info("identity coordinator: partition revoked, dropping this worker's graph")
            slot.drop()
        elif holds and slot.coordinator is None:
            await asyncio.get_running_loop().run_in_executor(None, slot.ensure)

    @app.agent(links, concurrency=1, name="identity")
    async def identity(stream: faust.StreamT) -> None:
        await run_agent(stream, lambda: slot)  # built when the partition is assigned (above)
