"""Raw record → validated, keyed touchpoints (the worker's first stage, free of Faust).

`Ingest.process` handles one Kafka record of either shape: decodes it, validates each event,
stamps the resolution, hands valid events to the publisher keyed by customer and invalid ones
to the dead-letter topic. It never raises on bad input. Nothing is acknowledged here: the
caller acks the record only after `flush()` returned (acks after the sink).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from cem.events import validate
from cem.identity import customer_key
from cem.schemas.registry import SchemaRegistry
from cem.schemas.serde import DecodeError, decode_record, encode_single
from cem.sinks.dlq import DeadLetters
from cem.connectors.publisher import BatchPublisher


RESOLUTION = "io.cem.Resolution"
ATTRIBUTE_RECORDS = {"web": "io.cem.WebAttributes", "store": "io.cem.StoreAttributes",
                     "phone": "io.cem.PhoneAttributes", "returns": "io.cem.ReturnsAttributes",
                     "feedback": "io.cem.FeedbackAttributes"}


@dataclass
class IngestCounts:
    records: int = 0
    events: int = 0
    forwarded: int = 0
    dead: int = 0


class Ingest:
    def __init__(self, registry: SchemaRegistry, publisher: BatchPublisher, dead: DeadLetters,
                 out_topic: str, horizon_ms: int, clock: Callable[[], float] = time.time,
                 on_events: Callable[[str, int], None] | None = None):
        self._registry = registry
        self._writer = registry.latest("touchpoint")
        self._reader = self._writer.parsed
        self._publisher = publisher
        self._dead = dead
        self._out = out_topic
        self._horizon = horizon_ms
        self._clock = clock
        self._on_events = on_events
        self.counts = IngestCounts()

    def process(self, value: bytes | None, topic: str, partition: int, offset: int) -> None:
        counts = self.counts
        counts.records += 1
        try:
            decoded = decode_record(value, self._registry, self._reader)
        except DecodeError as err:
            counts.dead += 1
            self._dead.send(value, err.reason, err.detail, topic=topic, partition=partition,
                            offset=offset)
            return
        now_ms = int(self._clock() * 1000)
        horizon = self._horizon
        publish = self._publisher.publish
        out = self._out
        forwarded = 0
        for index, event in enumerate(decoded.events):
            rejection = validate(event, now_ms, horizon)
            if rejection is not None:
                self._dead.send(self._original(event, value, decoded.is_batch), rejection.reason,
                                rejection.detail, topic=topic, partition=partition,
                                offset=offset, batch_index=index if decoded.is_batch else -1)
                counts.dead += 1
                continue
            key = customer_key(event["identifiers"])
            # (record name, value) tuples pick the Avro union branch directly: 1.4x faster encode
            event["cem"] = (RESOLUTION, {"customer_id": key, "late": False, "processed_at": now_ms})
            attrs = event[event["channel"]]
            if attrs is not None:
                event[event["channel"]] = (ATTRIBUTE_RECORDS[event["channel"]], attrs)
            publish(out, key.encode(), event)
            forwarded += 1
        counts.events += len(decoded.events)
        counts.forwarded += forwarded
        if self._on_events is not None:
            self._on_events(topic, len(decoded.events))

    def poll(self) -> None:
        self._publisher.poll()

    def flush(self) -> None:
        """Send everything buffered and wait for Kafka's acks (raises DeliveryFailed)."""
        self._publisher.flush()

    def _original(self, event: dict[str, Any], value: bytes | None, is_batch: bool) -> bytes:
        if not is_batch and value is not None:
            return value
        return encode_single(event, self._writer.id, self._writer.parsed)
