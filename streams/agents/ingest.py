"""The ingest agent: cem.raw.* → cem.touchpoints (+ cem.dlq).

Per Kafka record: `Ingest.process` (plain Python, no await inside the per-event loop), then the
publisher is flushed in a thread and the record acked only once every forward and dead letter
is acknowledged by Kafka. A crash before the ack redelivers the record; downstream landing is
idempotent, so redelivery never doubles rows.
"""
from __future__ import annotations

import asyncio
import logging

import faust
from confluent_kafka import Producer

from cem.connectors.kafka_admin import partitions_of
from cem.connectors.publisher import BatchPublisher, DeliveryFailed, producer_config
from cem.schemas.registry import default_registry
from cem.settings import DLQ_TOPIC, TOUCHPOINTS_TOPIC, Settings
from cem.sinks.dlq import DeadLetters
from cem import metrics
from cem.streams.ingest import Ingest

log = logging.getLogger(__name__)


def attach_ingest(app: faust.App, raw: faust.TopicT, settings: Settings) -> None:
    state: dict[str, object] = {}

    def build() -> Ingest:
        producer = Producer(producer_config(settings.kafka_bootstrap))
        registry = default_registry()
        publisher = BatchPublisher(
            producer, registry.latest("touchpoint").parsed,
            partitions_of(settings.kafka_bootstrap, [TOUCHPOINTS_TOPIC]),
            max_events=settings.publisher_max_events, max_bytes=settings.publisher_max_bytes,
            linger_ms=settings.publisher_linger_ms)
        dead = DeadLetters(producer, DLQ_TOPIC, "ingest", on_dead=metrics.dead_letter)
        return Ingest(registry, publisher, dead, TOUCHPOINTS_TOPIC,
                      settings.accept_horizon_days * 86_400_000, on_events=metrics.events_in)

    @app.agent(raw, concurrency=1, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        if "ingest" not in state:
            state["ingest"] = build()
        proc: Ingest = state["ingest"]  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        manual = stream.noack()
        async for event in manual.events():
            msg = event.message
            while True:
                proc.process(msg.value, msg.topic, msg.partition, msg.offset)
                try:
                    await loop.run_in_executor(None, proc.flush)
                    break
                except DeliveryFailed as err:
                    # Broker trouble: process the record again (landing dedups by event id);
                    # never ack a record whose output Kafka did not acknowledge.
                    log.warning("forward of %s[%d]@%d not acknowledged, retrying in 1 s: %s",
                                msg.topic, msg.partition, msg.offset, err)
                    await asyncio.sleep(1.0)
            await manual.ack(event)
