"""Publish generated touchpoints (and, on request, malformed records) to the raw topics.

Used by `cem demo`, `cem bench` and the tests. Valid events go through the batch publisher
(container-file records keyed per partition) or, with `single=True`, one Confluent wire-format
record per event the way an external Schema-Registry producer would send them.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from confluent_kafka import Producer

from cem.identity import customer_key
from cem.schemas.registry import SchemaRegistry
from cem.schemas.serde import encode_batch, encode_single
from cem.settings import RAW_TOPICS
from cem.kafka.connection import KafkaConnection
from cem.kafka.partitioning import partition_for
from cem.kafka.publisher import BatchPublisher, produce_waiting, producer_config

#: The five malformed classes of issue 3, with the DLQ reason each must get.
MALFORMED_KINDS = {
    "garbage": "undecodable",
    "wrong_magic": "bad_magic_byte",
    "unknown_schema": "unknown_schema_id",
    "missing_field": "missing_field:event_id",
    "future": "future_timestamp",
}


def malformed(kind: str, template: dict[str, Any], registry: SchemaRegistry) -> bytes:
    """One malformed record of `kind`, built from a valid `template` event."""
    w = registry.latest("touchpoint")
    if kind == "garbage":
        return b"\x00" + w.id.to_bytes(4, "big") + b"\xff" * 37
    if kind == "wrong_magic":
        return b"\x07" + encode_single(template, w.id, w.parsed)[1:]
    if kind == "unknown_schema":
        return b"\x00" + (9999).to_bytes(4, "big") + encode_single(template, w.id, w.parsed)[5:]
    if kind == "missing_field":
        return encode_single(dict(template, event_id=""), w.id, w.parsed)
    if kind == "future":
        return encode_single(dict(template, occurred_at=int(time.time() * 1000) + 30 * 86_400_000),
                             w.id, w.parsed)
    raise ValueError(f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}")


def publish_events(kafka: KafkaConnection, events: Iterable[dict[str, Any]], registry: SchemaRegistry,
                   partitions: dict[str, int], *, single: bool = False, max_events: int = 500,
                   linger_ms: int = 20) -> int:
    """Publish `events` to cem.raw.<channel>; return how many. Blocks until all are acked."""
    producer = Producer(producer_config(kafka))
    w = registry.latest("touchpoint")
    publisher = BatchPublisher(producer, w.parsed, partitions, max_events=max_events,
                               linger_ms=linger_ms)
    n = 0
    for ev in events:
        topic = RAW_TOPICS[ev["channel"]]
        key = customer_key(ev.get("identifiers") or {}).encode()
        if single:
            value = encode_single(ev, w.id, w.parsed)
            produce_waiting(producer, topic, value=value, key=key, partition=partition_for(key, partitions[topic]))
        else:
            publisher.publish(topic, key, ev)
        n += 1
        if n % 1000 == 0:
            publisher.poll()
    publisher.flush()
    return n


def batch_records(events: Iterable[dict[str, Any]], registry: SchemaRegistry, partitions: dict[str, int],
                  max_events: int = 500) -> list[tuple[str, int, bytes]]:
    """`events` as the batch records cem's publisher would send them, (topic, partition, value)
    in send order: each raw partition's events in their order, `max_events` to a container.
    For a bench that keeps the producer's encoding out of what it times (`publish_records`)."""
    schema = registry.latest("touchpoint").parsed
    open_: dict[tuple[str, int], list[dict[str, Any]]] = {}
    out: list[tuple[str, int, bytes]] = []
    for ev in events:
        topic = RAW_TOPICS[ev["channel"]]
        tp = (topic, partition_for(customer_key(ev.get("identifiers") or {}).encode(), partitions[topic]))
        buf = open_.setdefault(tp, [])
        buf.append(ev)
        if len(buf) >= max_events:
            out.append((*tp, encode_batch(open_.pop(tp), schema)))
    out += [(*tp, encode_batch(evs, schema)) for tp, evs in open_.items()]
    return out


def publish_records(kafka: KafkaConnection, records: Iterable[tuple[str, int, bytes]]) -> int:
    """Send (topic, partition, value) records as they are; blocks until all are acked."""
    producer = Producer(producer_config(kafka))
    n = 0
    for topic, partition, value in records:
        produce_waiting(producer, topic, value=value, partition=partition)
        n += 1
    if producer.flush(300):
        raise RuntimeError("records not acknowledged by Kafka within 300 s; is the broker up (cem infra status)?")
    return n


def publish_raw(kafka: KafkaConnection, topic: str, values: Iterable[bytes]) -> int:
    """Publish raw record values as they are (for malformed input)."""
    producer = Producer(producer_config(kafka))
    n = 0
    for v in values:
        producer.produce(topic, value=v)
        n += 1
    if producer.flush(30):
        raise RuntimeError("raw records not acknowledged by Kafka within 30 s")
    return n
