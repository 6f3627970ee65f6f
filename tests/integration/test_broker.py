"""The pinned broker (Kafka 4.1.1, KRaft, Maven Central jars) works with both clients cem uses:
aiokafka (under Faust) and confluent-kafka, in both directions, zstd included."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from cem.kafka.connection import KafkaConnection
from cem.kafka.admin import ensure_topics

pytestmark = pytest.mark.integration


def test_confluent_kafka_and_aiokafka_interoperate(kafka_bootstrap):
    topic = f"cem.test.interop.{uuid.uuid4().hex[:6]}"
    ensure_topics(KafkaConnection.plaintext(kafka_bootstrap), {topic: 2})
    p = Producer({"bootstrap.servers": kafka_bootstrap, "compression.type": "zstd", "enable.idempotence": True})
    for i in range(100):
        p.produce(topic, f"ck-{i}".encode(), key=str(i).encode())
    assert p.flush(30) == 0

    async def aio_roundtrip() -> list[bytes]:
        prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type="zstd")
        await prod.start()
        for i in range(50):
            await prod.send_and_wait(topic, f"aio-{i}".encode(), key=str(i).encode())
        await prod.stop()
        cons = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                group_id=f"g-{uuid.uuid4().hex[:6]}")
        await cons.start()
        seen: list[bytes] = []
        try:
            while len(seen) < 150:
                batch = await asyncio.wait_for(cons.getmany(timeout_ms=1000), 30)
                for msgs in batch.values():
                    seen.extend(m.value for m in msgs)
        finally:
            await cons.stop()
        return seen

    seen_by_aiokafka = asyncio.run(aio_roundtrip())
    assert sorted(seen_by_aiokafka) == sorted([f"ck-{i}".encode() for i in range(100)] +
                                              [f"aio-{i}".encode() for i in range(50)])
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = []
    for _ in range(60):
        seen.extend(m.value() for m in c.consume(200, 0.5) if not m.error())
        if len(seen) >= 150:
            break
    c.close()
    assert sorted(seen) == sorted(seen_by_aiokafka)
