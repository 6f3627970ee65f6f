"""Batches of JSON rows (JSONEachRow) for cem's low-volume derived topics — sessions, journeys,
merges, moments, alerts, customers — which landing hands to ClickHouse undecoded
(`FORMAT JSONEachRow`). One record carries the rows of one partition, newline-separated.
Same contract as the Avro BatchPublisher: key order kept, flush() waits for every ack."""
from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Producer

from cem.kafka.partitioning import partition_for
from cem.kafka.errors import is_permanent
from cem.kafka.publisher import DeliveryFailed, produce_waiting


class JsonRowPublisher:
    def __init__(self, producer: Producer, partitions: dict[str, int], max_rows: int = 1000):
        self._producer = producer
        self._partitions = partitions
        self._max = max_rows
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._failed: list[str] = []
        self._permanent = False  # a failed record was refused for good (is_permanent)
        self.rows = 0

    def publish(self, topic: str, key: str, row: dict[str, Any]) -> None:
        tp = (topic, partition_for(key.encode(), self._partitions[topic]))
        buf = self._buffers.setdefault(tp, [])
        buf.append(json.dumps(row, separators=(",", ":"), default=_default).encode())
        self.rows += 1
        if len(buf) >= self._max:
            self._send(tp)

    def _send(self, tp: tuple[str, int]) -> None:
        self.produce(tp[0], tp[1], None, b"\n".join(self._buffers.pop(tp)))

    def produce(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes | str | None]] | None = None) -> None:
        """One record outside the row batches (a state changelog entry, value None = a
        tombstone; a control record with its headers), under the same delivery tracking:
        `flush` raises if it was not acked."""
        produce_waiting(self._producer, topic, key=key, value=value, partition=partition, headers=headers,
                        on_delivery=self._delivered)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failed.append(str(err))
            self._permanent = self._permanent or is_permanent(err)

    def flush(self, timeout: float = 30.0) -> None:
        for tp in list(self._buffers):
            self._send(tp)
        if self._producer.flush(timeout):
            raise DeliveryFailed("derived rows not acknowledged by Kafka; is the broker up?")
        if self._failed:
            errors, self._failed = self._failed, []
            permanent, self._permanent = self._permanent, False
            raise DeliveryFailed(f"{len(errors)} derived record(s) failed: {errors[0]}", permanent=permanent)


def _default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")
