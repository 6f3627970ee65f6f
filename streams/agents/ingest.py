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
from cem.kafka.errors import WHAT_TO_DO
from cem.kafka.publisher import BatchPublisher, DeliveryFailed, producer_config
from cem.schemas.registry import default_registry
from cem.settings import DLQ_TOPIC, IDENTITY_LINKS_TOPIC, STAGE_TOPIC, TOUCHPOINTS_TOPIC, Settings, stage_input
from cem.kafka.dlq import DeadLetters
from cem import metrics
from cem.retry import Backoff
from cem.streams.identity_log import Replica
from cem.streams.ingest import Ingest

log = logging.getLogger(__name__)
MAX_PENDING_RECORDS = 64
MAX_PENDING_SECONDS = 0.05
#: Waits between attempts to forward a group whose output Kafka did not acknowledge: 1 s, 2 s, …
#: at most 10 s (a recovered broker is used again soon), for as long as it stays away (`_group_commit`).
FORWARD_BACKOFF = Backoff(first=1.0, cap=10.0)


class ForwardRefused(RuntimeError):
    """Kafka refused a stage's output for good (`DeliveryFailed.permanent`): sending the same
    records again cannot succeed, so the worker stops with this error instead of retrying."""


def forward_retry_wait(err: DeliveryFailed, attempt: int, stage: str, records: int) -> float:
    """Seconds to wait before processing and sending `records` input records again after failed
    attempt number `attempt` (transient failures: for as long as they last); raises
    ForwardRefused, naming the stage and what to fix, when Kafka refused the output for good."""
    if err.permanent:
        raise ForwardRefused(
            f"{stage}: Kafka refused the output of {records} input record(s) for good ({err}); {WHAT_TO_DO}, "
            "then restart the worker (the records were not acked and are read again)") from err
    return FORWARD_BACKOFF.delay(attempt)


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
            partitions_of(kafka, [TOUCHPOINTS_TOPIC, IDENTITY_LINKS_TOPIC, STAGE_TOPIC]),
            max_events=settings.publisher_max_events, max_bytes=settings.publisher_max_bytes,
            linger_ms=settings.publisher_linger_ms)
        dead = DeadLetters(producer, DLQ_TOPIC, "ingest", on_dead=metrics.dead_letter)
        replica = Replica(kafka, settings.worker_live_identifiers)
        replica.start()
        return Ingest(registry, publisher, dead, TOUCHPOINTS_TOPIC,
                      settings.accept_horizon_days * 86_400_000, on_events=metrics.events_in,
                      lookup=replica.graph.lookup, links_topic=IDENTITY_LINKS_TOPIC,
                      lateness_ms=settings.allowed_lateness_ms, stage_topic=stage_input(settings))

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
        return
    except asyncio.CancelledError:
        raise
    except ForwardRefused as err:  # says what to fix; its traceback would add nothing
        log.error("%s; stopping the worker", err)
    except Exception:  # noqa: BLE001
        log.exception("agent crashed; stopping the worker so it restarts cleanly")
    logging.shutdown()
    os._exit(70)


async def _group_commit(stream: faust.StreamT, proc: Processor) -> None:
    """Drive `proc.process(value, topic, partition, offset, headers, key)` over the stream's records, then
    `proc.flush()` (in a thread) and ack — at most MAX_PENDING_RECORDS or MAX_PENDING_SECONDS
    of records per flush.

    When Kafka does not acknowledge the output (`DeliveryFailed`), the pending records are
    processed again and re-sent, waiting `FORWARD_BACKOFF` between rounds, each round counted
    (cem_forward_retries_total) and logged. A transient failure (broker away, timeouts) is
    retried for as long as it lasts: the input stays unacked, so nothing is lost, and a restart
    could not do better (a new worker needs the same broker); landing drops the repeats by
    event id. A permanent refusal (record too large, topic missing, not authorised) raises
    `ForwardRefused`, which stops the worker with what to fix (`run_agent`)."""
    loop = asyncio.get_running_loop()
    stage = type(proc).__name__
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
        attempt = 0
        while True:
            try:
                await loop.run_in_executor(None, proc.flush)
                break
            except DeliveryFailed as err:
                # never ack a record whose output Kafka did not acknowledge
                attempt += 1
                delay = forward_retry_wait(err, attempt, stage, len(pending))
                metrics.FORWARD_RETRIES.labels(stage).inc()
                log.warning("%s: output of %d record(s) not acknowledged by Kafka (attempt %d), processing "
                            "them again in %.0f s: %s", stage, len(pending), attempt, delay, err)
                await asyncio.sleep(delay)
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
