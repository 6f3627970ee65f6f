"""Batch publisher: packs each destination partition's events into one Avro container-file
record (DESIGN.md "Throughput").

Contract:
* events for one key keep their order: one key maps to one partition, a partition has one
  buffer, buffers are produced in order and the producer is idempotent (acks=all);
* a buffer is flushed at `max_events`, `max_bytes` or `linger_ms`, whichever comes first;
  `poll()` must be called regularly to honour `linger_ms`;
* `flush()` returns only when every record handed to Kafka so far is acknowledged, and raises
  `DeliveryFailed` if any was not — the caller acks its input only after that (acks after the sink);
* when librdkafka's local queue is full, `publish` blocks on delivery progress instead of
  buffering without bound (backpressure to the caller);
* a buffer holds its events' Avro encodings back to back and becomes one container block under
  this publisher's header, so an event already encoded in the publisher's schema
  (`publish_datum`, what the identity coordinator forwards) goes in without a decode or encode;
* `publish_row` buffers the customer stage's internal rows instead (`cem.schemas.stage`, one
  marshal record per partition), with the same ordering, flushing and acks.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cem import metrics
from cem.kafka.connection import KafkaConnection
from confluent_kafka import KafkaException, Producer
from fastavro import schemaless_writer

from cem.schemas import ocf, stage
from cem.schemas.serde import container_schema_json
from cem.kafka.errors import is_permanent, kafka_error
from cem.kafka.partitioning import partition_for


class DeliveryFailed(RuntimeError):
    """Kafka did not acknowledge one or more records; the input must not be acked. `permanent`:
    Kafka refused a record for good (`cem.kafka.errors.is_permanent`), so sending it again cannot
    help; otherwise the failure is transient (broker away, timeout) and a retry can succeed."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def produce_waiting(producer: Producer, topic: str, **kwargs: Any) -> None:
    """`producer.produce(topic, **kwargs)`, serving delivery callbacks while librdkafka's local
    queue is full (backpressure: the caller blocks instead of buffering without bound). This
    wait ends: the queue drains as records are delivered, or as they expire after
    `message.timeout.ms` (librdkafka's default: 300 s), each expiry reported to its delivery
    callback as a failed delivery, which the caller's flush turns into `DeliveryFailed`."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


@dataclass
class PublisherStats:
    records: int = 0
    events: int = 0
    bytes: int = 0
    delivered: int = 0
    failed: int = 0
    permanent: int = 0  # of the failed: refused for good (is_permanent)
    errors: list[str] = field(default_factory=list)


class _Buffer:
    """One partition's pending events: their Avro encodings back to back (one container block),
    or the internal stage rows (`rows`, for `publish_row`)."""
    __slots__ = ("out", "count", "opened", "rows")

    def __init__(self, rows: bool = False):
        self.out = io.BytesIO()
        self.count = 0
        self.opened = time.monotonic()
        self.rows: list[tuple] | None = [] if rows else None


def producer_config(kafka: KafkaConnection, **extra: Any) -> dict[str, Any]:
    """The confluent-kafka producer config every cem publisher uses."""
    return kafka.client_config(**{
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "zstd",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "message.max.bytes": 8_000_000,
        "queue.buffering.max.kbytes": 256 * 1024,
        "partitioner": "murmur2_random",
        **extra})


class BatchPublisher:
    def __init__(self, producer: Producer, schema: Any, partitions: dict[str, int], *,
                 max_events: int = 500, max_bytes: int = 256 * 1024, linger_ms: int = 20,
                 on_delivery: Callable[[str, int, int], None] | None = None):
        self._producer = producer
        self._schema = schema
        self._sync = os.urandom(16)
        self._header = ocf.header(container_schema_json(schema), self._sync)
        self._partitions = dict(partitions)
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._linger = linger_ms / 1000.0
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._on_delivery = on_delivery
        self.stats = PublisherStats()

    def publish(self, topic: str, key: bytes, event: dict[str, Any]) -> None:
        """Buffer `event` for `topic` in the partition of `key`."""
        tp, buf = self._buffer(topic, key)
        schemaless_writer(buf.out, self._schema, event)
        self._added(tp, buf)

    def publish_datum(self, topic: str, key: bytes, datum: bytes) -> None:
        """Like `publish`, for an event already encoded: `datum` must be the Avro binary
        encoding of one record in this publisher's schema (it is not checked here)."""
        tp, buf = self._buffer(topic, key)
        buf.out.write(datum)
        self._added(tp, buf)

    def publish_row(self, topic: str, key: bytes, row: tuple) -> None:
        """Buffer one internal stage row (`cem.schemas.stage.stage_row`) for `topic` in the
        partition of `key`; a topic takes either rows or Avro events, never both."""
        tp, buf = self._buffer(topic, key, rows=True)
        buf.rows.append(row)  # type: ignore[union-attr]
        buf.count += 1
        if buf.count >= self._max_events:
            self._send(tp)

    def _buffer(self, topic: str, key: bytes, rows: bool = False) -> tuple[tuple[str, int], _Buffer]:
        tp = (topic, partition_for(key, self._partitions[topic]))
        buf = self._buffers.get(tp)
        if buf is None:
            buf = self._buffers[tp] = _Buffer(rows)
        return tp, buf

    def _added(self, tp: tuple[str, int], buf: _Buffer) -> None:
        """One more event is in `buf`: send it once it is full."""
        buf.count += 1
        if buf.count >= self._max_events or buf.out.tell() >= self._max_bytes:
            self._send(tp)

    def publish_to_partition(self, topic: str, partition: int, events: list[dict[str, Any]]) -> None:
        """Send `events` as one batch record to an explicit partition (already grouped)."""
        buf = _Buffer()
        for ev in events:
            schemaless_writer(buf.out, self._schema, ev)
        buf.count = len(events)
        self._produce(topic, partition, buf)

    def flush_partition(self, topic: str, partition: int) -> None:
        """Send the buffer of one partition now (to order a control record after it)."""
        if (topic, partition) in self._buffers:
            self._send((topic, partition))

    def send_control(self, topic: str, partition: int, body: dict) -> None:
        """A control record (JSON, header cem-control) after everything buffered for that
        partition: records of one producer to one partition keep their order."""
        import json
        self.flush_partition(topic, partition)
        produce_waiting(self._producer, topic, value=json.dumps(body).encode(), partition=partition,
                        headers=[("cem-control", body["control"].encode())])

    def poll(self) -> None:
        """Flush buffers older than linger_ms and serve delivery callbacks."""
        if self._buffers:
            now = time.monotonic()
            for tp in [tp for tp, b in self._buffers.items() if now - b.opened >= self._linger]:
                self._send(tp)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Send every buffer and wait for all deliveries; raise DeliveryFailed on any failure."""
        self.send_buffered()
        self.wait_acked(timeout)

    def send_buffered(self) -> None:
        """Hand every buffer to the producer now (the first half of `flush`). Buffers are not
        thread-safe: call this from the thread that publishes."""
        for tp in list(self._buffers):
            self._send(tp)

    def wait_acked(self, timeout: float = 30.0) -> None:
        """Wait until every record handed to the producer so far is acknowledged; raise
        DeliveryFailed on any failure (the second half of `flush`). It touches no buffer, so it
        may run in another thread while the owner keeps publishing (the collector does)."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryFailed(f"{remaining} record(s) not acknowledged by Kafka within {timeout:.0f} s; "
                                 "is the broker up (cem infra status)?")
        if self.stats.failed:
            errors, self.stats.errors = self.stats.errors, []
            failed, self.stats.failed = self.stats.failed, 0
            permanent, self.stats.permanent = self.stats.permanent, 0
            raise DeliveryFailed(f"{failed} record(s) failed: {'; '.join(errors[:3])}", permanent=permanent > 0)

    def _send(self, tp: tuple[str, int]) -> None:
        buf = self._buffers.pop(tp)
        self._produce(tp[0], tp[1], buf)

    def _produce(self, topic: str, partition: int, buf: _Buffer) -> None:
        count = buf.count
        if buf.rows is not None:
            value = stage.encode_rows(buf.rows)
        else:
            data = buf.out.getvalue()
            value = self._header if not count else b"".join(
                (self._header, ocf.write_long(count), ocf.write_long(len(data)), data, self._sync))
        stats = self.stats

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                stats.failed += 1
                stats.permanent += is_permanent(err)
                if len(stats.errors) < 20:
                    stats.errors.append(str(err))
            else:
                stats.delivered += 1
                metrics.events_out(topic, count)
                if self._on_delivery is not None:
                    self._on_delivery(topic, partition, count)

        try:
            produce_waiting(self._producer, topic, value=value, partition=partition, on_delivery=delivered)
        except KafkaException as err:
            raise DeliveryFailed(f"produce to {topic}[{partition}] failed: {err}",
                                 permanent=is_permanent(kafka_error(err))) from err
        stats.records += 1
        stats.events += count
        stats.bytes += len(value)
