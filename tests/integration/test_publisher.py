"""The batch publisher on the real broker: murmur2 placement agrees with confluent-kafka's own
partitioner, and one key's events keep their order across many batch records, whether they were
handed over decoded or as encoded bytes (`publish_datum`)."""
from __future__ import annotations

import io
import time
import uuid

import fastavro

import pytest
from confluent_kafka import Consumer, Producer

from cem.kafka.connection import KafkaConnection
from cem.kafka.admin import ensure_topics
from cem.kafka.publisher import BatchPublisher, producer_config
from cem.sim.generator import touchpoints
from cem.schemas.registry import default_registry
from cem.schemas.serde import decode_record

pytestmark = pytest.mark.integration
REG = default_registry()
W = REG.latest("touchpoint")


def consume_all(kafka, topic, expected_records, timeout=30):
    c = Consumer(kafka.client_config(**{"group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout
    while len(out) < expected_records and time.monotonic() < deadline:
        out.extend(m for m in c.consume(500, 0.5) if not m.error())
    c.close()
    return out


def test_one_keys_events_keep_their_order_across_batches_and_land_where_kafka_puts_the_key(kafka_bootstrap):
    topic = f"cem.test.pub.{uuid.uuid4().hex[:6]}"
    kafka = KafkaConnection.plaintext(kafka_bootstrap)
    ensure_topics(kafka, {topic: 6})
    pub = BatchPublisher(Producer(producer_config(kafka)), W.parsed, {topic: 6}, max_events=37)
    keys = [f"customer-{i}".encode() for i in range(13)]
    sent = {k: [] for k in keys}
    for i, ev in enumerate(touchpoints(2_000, start_ms=1_790_000_000_000)):
        key = keys[i % len(keys)]
        ev["source"] = f"seq-{i}"
        if i % 3:
            pub.publish(topic, key, ev)
        else:  # already encoded, as ingest forwards what it read
            body = io.BytesIO()
            fastavro.schemaless_writer(body, W.parsed, ev)
            pub.publish_datum(topic, key, body.getvalue())
        sent[key].append(ev["event_id"])
        if i % 100 == 0:
            pub.poll()
    pub.flush()
    assert pub.stats.delivered == pub.stats.records and pub.stats.events == 2_000

    # confluent-kafka's murmur2 partitioner places the same keys (single-event producers agree)
    ck = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    placed = {}
    for k in keys:
        ck.produce(topic, b"probe", key=k, on_delivery=lambda err, m: placed.__setitem__(m.key(), m.partition()))
    ck.flush(30)

    records = consume_all(kafka, topic, pub.stats.records + len(keys))
    got = {k: [] for k in keys}
    partitions_of_key: dict[bytes, set[int]] = {k: set() for k in keys}
    for m in records:
        if m.value() == b"probe":
            continue
        for ev in decode_record(m.value(), REG, W.parsed).events:
            key = keys[int(ev["source"][4:]) % len(keys)]
            got[key].append(ev["event_id"])
            partitions_of_key[key].add(m.partition())
    assert got == sent
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert {k: p.pop() for k, p in partitions_of_key.items()} == placed
