"""The dead-letter topic: bad input never crashes a worker and never disappears.

Each DLQ record holds the original bytes (the whole record when it did not decode; the one
event re-encoded in Confluent wire format when only that event of a batch was invalid) and
headers saying where it came from and why: cem-reason (stable code), cem-detail (for a
person), cem-source-topic/-partition/-offset, cem-batch-index (-1 for a whole record),
cem-failed-at (epoch ms), cem-stage; when known cem-source-key (the source record's key, a null
value when it had none; absent when the stage does not know it); and cem-replay-of (the dead
letter this record was a `cem dlq replay` of, so a record that fails again says where it came
from).
The record's own key is topic:partition:offset:batch_index. Produces are idempotent and acked
with the rest of the batch. `cem dlq` (kafka/dlq_replay.py) reads these headers back.
"""
from __future__ import annotations

import enum
import time
from typing import Any

from confluent_kafka import Producer

from cem.kafka.publisher import produce_waiting

DLQ_HEADERS = ("cem-reason", "cem-detail", "cem-source-topic", "cem-source-partition",
               "cem-source-offset", "cem-batch-index", "cem-failed-at", "cem-stage")
#: Optional headers: the source record's key, and the dead letter a replayed record came from.
SOURCE_KEY = "cem-source-key"
REPLAY_OF = "cem-replay-of"


class UnknownKey(enum.Enum):
    KEY = "unknown"


#: `send(key=...)` default: the stage does not know the source record's key (no header written).
UNKNOWN_KEY = UnknownKey.KEY


class DeadLetters:
    def __init__(self, producer: Producer, topic: str, stage: str,
                 on_dead: Any = None):
        self._producer = producer
        self._topic = topic
        self._stage = stage
        self._on_dead = on_dead  # callable(reason) for metrics
        self.count = 0

    def send(self, value: bytes | None, reason: str, detail: str, *, topic: str, partition: int,
             offset: int, batch_index: int = -1, key: bytes | None | UnknownKey = UNKNOWN_KEY,
             source_headers: list[tuple[str, bytes]] | None = None) -> None:
        """Dead-letter `value`. `key` is the source record's key, None when it had none (kept so
        a replay re-publishes it with the same key; a null key is a header with a null value);
        `source_headers` are the source record's headers, of which only cem-replay-of is kept."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("cem-reason", reason.encode()),
            ("cem-detail", detail.encode("utf-8", "replace")[:1000]),
            ("cem-source-topic", topic.encode()),
            ("cem-source-partition", str(partition).encode()),
            ("cem-source-offset", str(offset).encode()),
            ("cem-batch-index", str(batch_index).encode()),
            ("cem-failed-at", str(int(time.time() * 1000)).encode()),
            ("cem-stage", self._stage.encode()),
        ]
        if key is not UNKNOWN_KEY:
            headers.append((SOURCE_KEY, key))
        headers.extend((k, v) for k, v in (source_headers or ()) if k == REPLAY_OF)
        own_key = f"{topic}:{partition}:{offset}:{batch_index}".encode()
        produce_waiting(self._producer, self._topic, value=value, key=own_key, headers=headers)
        self.count += 1
        if self._on_dead is not None:
            self._on_dead(reason)


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Decode a DLQ record's headers for display and tests (a null value reads as "")."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or [])}
