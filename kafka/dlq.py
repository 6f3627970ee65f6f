"""The dead-letter topic: bad input never crashes a worker and never disappears.

Each DLQ record holds the original bytes (the whole record when it did not decode; the one
event re-encoded in Confluent wire format when only that event of a batch was invalid) and
headers saying where it came from and why: cem-reason (stable code), cem-detail (for a
person), cem-source-topic/-partition/-offset, cem-batch-index (-1 for a whole record) and
cem-failed-at (epoch ms). Produces are idempotent and acked with the rest of the batch.
"""
from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Producer

DLQ_HEADERS = ("cem-reason", "cem-detail", "cem-source-topic", "cem-source-partition",
               "cem-source-offset", "cem-batch-index", "cem-failed-at", "cem-stage")


class DeadLetters:
    def __init__(self, producer: Producer, topic: str, stage: str,
                 on_dead: Any = None):
        self._producer = producer
        self._topic = topic
        self._stage = stage
        self._on_dead = on_dead  # callable(reason) for metrics
        self.count = 0

    def send(self, value: bytes | None, reason: str, detail: str, *, topic: str, partition: int,
             offset: int, batch_index: int = -1) -> None:
        headers: list[tuple[str, bytes | str | None]] = [
            ("cem-reason", reason.encode()),
            ("cem-detail", detail.encode("utf-8", "replace")[:1000]),
            ("cem-source-topic", topic.encode()),
            ("cem-source-partition", str(partition).encode()),
            ("cem-source-offset", str(offset).encode()),
            ("cem-batch-index", str(batch_index).encode()),
            ("cem-failed-at", str(int(time.time() * 1000)).encode()),
            ("cem-stage", self._stage.encode()),
        ]
        key = f"{topic}:{partition}:{offset}:{batch_index}".encode()
        while True:
            try:
                self._producer.produce(self._topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.count += 1
        if self._on_dead is not None:
            self._on_dead(reason)


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Decode a DLQ record's headers for display and tests."""
    return {k: v.decode("utf-8", "replace") for k, v in (headers or [])}
