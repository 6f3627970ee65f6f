"""Raw record → validated, keyed touchpoints (the worker's first stage, free of Faust).

`Ingest.process` handles one Kafka record of either shape: decodes it, validates each event,
keeps its `received_at` plausible (`repair_received_at`), withholds the identifiers of an event
sent with `consent` = false (cem.privacy: it is forwarded as nobody's, never to the
coordinator), stamps the resolution, hands valid events to the publisher keyed by customer and
invalid ones to the dead-letter topic. It never raises on bad input. Nothing is acknowledged
here: the caller acks the record only after `flush()` returned (acks after the sink).

Every event is encoded anew rather than forwarded as the bytes a producer wrote, although that
would save the costliest step here: fastavro reads bytes that ClickHouse refuses (a boolean byte
of 5, an 11-byte varint) or reads otherwise (a negative union index), and landing hands
cem.touchpoints to ClickHouse undecoded. Encoded here, what lands is what the worker decoded.
Hops between cem's own stages forward bytes (the coordinator stamps what this stage encoded).
With a `stage_topic` (CEM_STAGE_HOP=marshal) every resolved event also goes there as the few
fields the customer stage reads (`cem.schemas.stage`), in the same flush as its Avro: the stage
never decodes Avro again, and an input record is acked only once both are acknowledged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from cem import metrics
from cem.events import repair_received_at, validate
from cem.identity import profile_id_for, usable_identifiers
from cem.privacy import NO_CONSENT, withhold_identifiers, withholds_consent
from cem.schemas.registry import SchemaRegistry
from cem.schemas.serde import DecodeError, decode_record, encode_single
from cem.schemas.stage import stage_row
from cem.kafka.dlq import UNKNOWN_KEY, DeadLetters, UnknownKey
from cem.kafka.publisher import BatchPublisher


RESOLUTION = "io.cem.Resolution"
ATTRIBUTE_RECORDS = {"web": "io.cem.WebAttributes", "store": "io.cem.StoreAttributes",
                     "phone": "io.cem.PhoneAttributes", "returns": "io.cem.ReturnsAttributes",
                     "feedback": "io.cem.FeedbackAttributes", "email": "io.cem.EmailAttributes"}
CONTACT = "io.cem.ContactAttributes"


def branch_tagged(event: dict[str, Any]) -> dict[str, Any]:
    """`event` with its channel attributes as (record name, value), which picks the Avro union
    branch without trying each (1.4x faster to encode); changes `event` in place."""
    attrs = event[event["channel"]]
    if attrs is not None and not isinstance(attrs, tuple):
        event[event["channel"]] = (ATTRIBUTE_RECORDS[event["channel"]], attrs)
    contact = event.get("contact")
    if contact is not None and not isinstance(contact, tuple):
        event["contact"] = (CONTACT, contact)
    return event


@dataclass
class IngestCounts:
    records: int = 0
    events: int = 0
    forwarded: int = 0
    to_coordinator: int = 0
    dead: int = 0
    received_at_repaired: int = 0
    without_consent: int = 0


class Ingest:
    def __init__(self, registry: SchemaRegistry, publisher: BatchPublisher, dead: DeadLetters,
                 out_topic: str, horizon_ms: int, clock: Callable[[], float] = time.time,
                 on_events: Callable[[str, int], None] | None = None,
                 lookup: Callable[[Any], str | None] | None = None, links_topic: str | None = None,
                 lateness_ms: int = 600_000, stage_topic: str | None = None):
        self._registry = registry
        self._writer = registry.latest("touchpoint")
        self._reader = self._writer.parsed
        self._publisher = publisher
        self._dead = dead
        self._out = out_topic
        self._horizon = horizon_ms
        self._clock = clock
        self._on_events = on_events
        self._lookup = lookup
        self._links = links_topic
        self._lateness = lateness_ms
        self._stage = stage_topic  # the customer stage's internal input, if it has one
        self._source_max: dict[str, int] = {}
        self._touched: set[str] = set()
        self.counts = IngestCounts()

    def process(self, value: bytes | None, topic: str, partition: int, offset: int,
                headers: list | None = None, key: bytes | None | UnknownKey = UNKNOWN_KEY) -> None:
        counts = self.counts
        counts.records += 1
        try:
            decoded = decode_record(value, self._registry, self._reader)
        except DecodeError as err:
            counts.dead += 1
            self._dead.send(value, err.reason, err.detail, topic=topic, partition=partition,
                            offset=offset, key=key, source_headers=headers)
            return
        now_ms = int(self._clock() * 1000)
        horizon = self._horizon
        publish = self._publisher.publish
        stage = self._stage
        publish_row = self._publisher.publish_row
        out = self._out
        forwarded = repaired = 0
        for index, event in enumerate(decoded.events):
            rejection = validate(event, now_ms, horizon)
            if rejection is not None:
                self._dead.send(self._original(event, value, decoded.is_batch), rejection.reason,
                                rejection.detail, topic=topic, partition=partition,
                                offset=offset, batch_index=index if decoded.is_batch else -1,
                                key=key, source_headers=headers)
                counts.dead += 1
                continue
            if repair_received_at(event, now_ms):
                repaired += 1
            event = branch_tagged(event)
            if withholds_consent(event):
                # landed without identifiers, linked to nobody, keyed by itself (spreads evenly)
                withhold_identifiers(event)
                event["cem"] = (RESOLUTION, {"customer_id": NO_CONSENT, "late": False, "processed_at": now_ms})
                publish(out, event["event_id"].encode(), event)
                forwarded += 1
                counts.without_consent += 1
                continue
            ids = event["identifiers"]
            customer = self._lookup(ids) if self._lookup is not None else None
            if customer is None:
                first = usable_identifiers(ids)
                if self._links is not None and first:
                    # new identifier or a link between profiles: the coordinator decides
                    publish(self._links, b"", event)
                    counts.to_coordinator += 1
                    forwarded += 1
                    continue
                # nothing usable to link with (only blocked values): the event stands alone
                customer = profile_id_for(first[0] if first else f"event:{event['event_id']}")
            event["cem"] = (RESOLUTION, {"customer_id": customer, "late": False, "processed_at": now_ms})
            out_key = customer.encode()
            publish(out, out_key, event)
            if stage is not None:
                publish_row(stage, out_key, stage_row(event, customer))
            forwarded += 1
        source = f"{topic}:{partition}"
        newest = max((e["occurred_at"] for e in decoded.events if isinstance(e.get("occurred_at"), int)
                      and e["occurred_at"] <= now_ms + 3_600_000), default=None)
        if newest is not None and newest > self._source_max.get(source, -(1 << 62)):
            self._source_max[source] = newest
        self._touched.add(source)
        counts.events += len(decoded.events)
        counts.forwarded += forwarded
        if repaired:
            counts.received_at_repaired += repaired
            metrics.received_at_repaired(topic, repaired)
        if self._on_events is not None:
            self._on_events(topic, len(decoded.events))

    def poll(self) -> None:
        self._publisher.poll()

    def flush(self) -> None:
        """Send everything buffered and wait for Kafka's acks (raises DeliveryFailed); then
        tell the coordinator how far each raw partition has come (its watermark), behind the
        events it forwarded, so event time downstream never overtakes an event in flight."""
        self._publisher.flush()
        if self._links is None:
            return
        # every source read since the last report, changed or not: a report is also a sign of
        # life, so a partition working through old records is never taken for an idle one
        marks = {s: self._source_max[s] - self._lateness for s in self._touched if s in self._source_max}
        if marks:
            self._publisher.send_control(self._links, 0, {"control": "watermark", "sources": marks,
                                                          "wall": int(self._clock() * 1000)})
            self._publisher.flush()
        self._touched.clear()

    def _original(self, event: dict[str, Any], value: bytes | None, is_batch: bool) -> bytes:
        if not is_batch and value is not None:
            return value
        return encode_single(event, self._writer.id, self._writer.parsed)
