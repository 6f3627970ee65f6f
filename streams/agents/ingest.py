"""The ingest agent: cem.raw.* → cem.touchpoints (+ cem.dlq).

Per Kafka record: `Ingest.process` (plain Python, no await inside the per-event loop). While
more records are queued (at most 64 or 50 ms), the agent keeps processing; then the publisher
is flushed in a thread and the records are acked only once every forward and dead letter is
acknowledged by Kafka (group commit). A crash before the ack redelivers the record; downstream landing is
idempotent, so redelivery never doubles rows.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable, Protocol

import faust
from confluent_kafka import Producer

from cem.kafka.connection import KafkaConnection
from cem.kafka.admin import partitions_of
from cem.kafka.publisher import BatchPublisher, DeliveryFailed, producer_config
from cem.schemas.registry import default_registry
from cem.settings import DLQ_TOPIC, IDENTITY_LINKS_TOPIC, TOUCHPOINTS_TOPIC, Settings
from cem.kafka.dlq import DeadLetters
from cem import metrics
from cem.streams.identity_log import Replica
from cem.streams.ingest import Ingest

log = logging.getLogger(__name__)
MAX_PENDING_RECORDS = 64
MAX_PENDING_SECONDS = 0.05


class Processor(Protocol):
    """A stage the agent drives (Ingest, Coordinator, CustomerStage): records in, then a flush
    that returns once Kafka acknowledged everything they produced."""
    def process(self, value: bytes | None, topic: str, partition: int, offset: int,
                headers: list | None = None, key: bytes | None = None) -> None: ...
    def flush(self) -> None: ...


def attach_ingest(app: faust.App, raw: faust.TopicT, settings: Settings, kafka: KafkaConnection) -> None:
    state: dict[str, Ingest] = {}

    def build() -> Ingest:
        producer = Producer(producer_config(kafka))
        registry = default_registry()
        publisher = BatchPublisher(
            producer, registry.latest("touchpoint").parsed,
            partitions_of(kafka, [TOUCHPOINTS_TOPIC, IDENTITY_LINKS_TOPIC]),
            max_events=settings.publisher_max_events, max_bytes=settings.publisher_max_bytes,
            linger_ms=settings.publisher_linger_ms)
        dead = DeadLetters(producer, DLQ_TOPIC, "ingest", on_dead=metrics.dead_letter)
        replica = Replica(kafka, settings.worker_live_identifiers)
        replica.start()
        return Ingest(registry, publisher, dead, TOUCHPOINTS_TOPIC,
                      settings.accept_horizon_days * 86_400_000, on_events=metrics.events_in,
                      lookup=replica.graph.lookup, links_topic=IDENTITY_LINKS_TOPIC,
                      lateness_ms=settings.allowed_lateness_ms)

    @app.agent(raw, concurrency=1, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        def make() -> Ingest:
            if "ingest" not in state:
                state["ingest"] = build()
            return state["ingest"]
        await run_agent(stream, make)


async def group_commit(stream: faust.StreamT, proc: Processor) -> None:
    await run_agent(stream, lambda: proc)


async def run_agent(stream: faust.StreamT, make: Callable[[], Processor]) -> None:
    """Run `_group_commit`; a bug or an unrecoverable error stops the whole worker (exit 70)
    instead of leaving it running without this agent — the supervisor restarts it and the
    unacked records are redelivered. Bad *input* never gets here: it is dead-lettered."""
    try:
        proc = await asyncio.get_running_loop().run_in_executor(None, make)
        await _group_commit(stream, proc)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001
        log.exception("agent crashed; stopping the worker so it restarts cleanly")
        logging.shutdown()
        os._exit(70)


async def _group_commit(stream: faust.StreamT, proc: Processor) -> None:
    """Drive `proc.process(value, topic, partition, offset, headers, key)` over the stream's records, then
    `proc.flush()` (in a thread) and ack — at most MAX_PENDING_RECORDS or MAX_PENDING_SECONDS
    of records per flush. On DeliveryFailed the pending records are processed again."""
    loop = asyncio.get_running_loop()
    manual = stream.noack()  # type: ignore[attr-defined]  # (faust's StreamT omits it; the agent's Stream has it)
    queue = manual.channel.queue
    pending: list = []
    opened = 0.0
    async for event in manual.events():
        msg = event.message
        proc.process(msg.value, msg.topic, msg.partition, msg.offset, _headers(msg), msg.key)
        if not pending:
            opened = loop.time()
        pending.append(event)
        # keep going while records are queued, so output records fill up and one produce
        # round trip covers many input records; bounded in count and time
        if len(pending) < MAX_PENDING_RECORDS and loop.time() - opened < MAX_PENDING_SECONDS:
            if queue.empty():
                await asyncio.sleep(0.002)  # let the fetcher deliver what is in flight
            if not queue.empty():
                continue
        while True:
            try:
                await loop.run_in_executor(None, proc.flush)
                break
            except DeliveryFailed as err:
                # Broker trouble: process the records again (landing dedups by event id);
                # never ack a record whose output Kafka did not acknowledge.
                log.warning("forward of %d record(s) not acknowledged, retrying in 1 s: %s",
                            len(pending), err)
                await asyncio.sleep(1.0)
                for ev in pending:
                    m = ev.message
                    proc.process(m.value, m.topic, m.partition, m.offset, _headers(m), m.key)
        for ev in pending:
            await manual.ack(ev)
        pending.clear()


def _headers(msg: Any) -> list[tuple[str, bytes]] | None:
    h = msg.headers
    if not h:
        return None
    items = h.items() if isinstance(h, dict) else h
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
