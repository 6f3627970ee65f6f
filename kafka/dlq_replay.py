"""`cem dlq`'s Kafka side: read cem.dlq and the replay ledger, re-publish dead letters.

Contract of `replay` (the plan comes from cem.dead_letters.plan_replay):
* each planned dead letter is produced to its source topic/partition with its key and a
  cem-replay-of header (`cem.dlq:<partition>:<offset>`), by an idempotent producer;
* only after Kafka acknowledged a record is its ledger entry written to the compacted topic
  cem.dlq.replays (key: the dead letter's cem.dlq position), and `replay` returns only when the
  ledger entries are acknowledged too. So a replay that is interrupted re-publishes at most the
  records whose entry was not yet written (at-least-once; touchpoints dedup by event id in the
  customer stage and ClickHouse), and a finished replay is never repeated;
* a record Kafka refused is reported and not entered in the ledger, so the next replay tries it
  again.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Mapping

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cem.dead_letters import REPLAY_OF, DeadLetter, Replay, ledger_entry, parse
from cem.identity import customer_key
from cem.kafka.admin import ensure_topics
from cem.kafka.publisher import produce_waiting, producer_config
from cem.kafka.connection import KafkaConnection
from cem.kafka.topic_reader import read_to_end
from cem.schemas.registry import default_registry
from cem.schemas.serde import DecodeError, decode_record
from cem.settings import DLQ_REPLAYS_TOPIC, DLQ_TOPIC, RAW_TOPICS, TOPIC_CONFIGS


def read_dead_letters(kafka: KafkaConnection, timeout: float = 60.0) -> list[DeadLetter]:
    """Every dead letter retained in cem.dlq, in partition/offset order."""
    out = [parse(m.headers(), m.value(), m.partition(), m.offset())
           for m in read_to_end(kafka, DLQ_TOPIC, timeout=timeout)]
    return sorted(out, key=lambda d: (d.dlq_partition, d.dlq_offset))


def read_ledger(kafka: KafkaConnection, timeout: float = 60.0) -> dict[str, dict[str, object]]:
    """Dead-letter id -> ledger entry, for every dead letter replayed so far (latest per key);
    empty when the ledger topic does not exist yet."""
    ledger: dict[str, dict[str, object]] = {}
    if DLQ_REPLAYS_TOPIC not in topic_partitions(kafka, timeout=min(timeout, 10)):
        return ledger
    for m in read_to_end(kafka, DLQ_REPLAYS_TOPIC, timeout=timeout):
        key = (m.key() or b"").decode()
        if m.value() is None:
            ledger.pop(key, None)
        else:
            ledger[key] = json.loads(m.value())
    return ledger


def topic_partitions(kafka: KafkaConnection, timeout: float = 10.0) -> dict[str, int]:
    """Every topic of the cluster -> its partition count."""
    md = AdminClient(kafka.client_config()).list_topics(timeout=timeout).topics
    return {t: len(m.partitions) for t, m in md.items()}


def derive_key(letter: DeadLetter) -> bytes | None:
    """The key a cem producer gives a record it writes to a raw topic — the routing key of its
    event — for a dead letter that did not record its source key. Only a single event (wire
    format) that decodes now has one; cem's batch records carry no key."""
    if letter.source_topic not in RAW_TOPICS.values() or not letter.value or letter.value[:4] == b"Obj\x01":
        return None
    reg = default_registry()
    try:
        events = decode_record(letter.value, reg, reg.latest("touchpoint").parsed).events
    except DecodeError:
        return None
    ids = events[0].get("identifiers") if events else None
    return customer_key(ids).encode() if isinstance(ids, dict) else None


@dataclass
class ReplayResult:
    sent: list[tuple[Replay, int, int]] = field(default_factory=list)   # (item, partition, offset)
    failed: list[tuple[Replay, str]] = field(default_factory=list)


def replay(kafka: KafkaConnection, items: list[Replay], ledger_partitions: int = 1,
           timeout: float = 60.0) -> ReplayResult:
    """Re-publish `items`, then record them in the ledger (see the module contract). The ledger
    topic is created (compacted) if a deployment older than it lacks it."""
    result = ReplayResult()
    if not items:
        return result
    ensure_topics(kafka, {DLQ_REPLAYS_TOPIC: ledger_partitions}, config=TOPIC_CONFIGS[DLQ_REPLAYS_TOPIC])
    producer = Producer(producer_config(kafka))

    def delivered(item: Replay):
        def cb(err, msg) -> None:
            if err is not None:
                result.failed.append((item, str(err)))
            else:
                result.sent.append((item, msg.partition(), msg.offset()))
        return cb

    for item in items:
        kwargs: dict = {"key": item.key, "value": item.letter.value,
                        "headers": [(REPLAY_OF, f"{DLQ_TOPIC}:{item.letter.id}".encode())],
                        "on_delivery": delivered(item)}
        if item.partition is not None:
            kwargs["partition"] = item.partition
        _produce(producer, item.topic, kwargs)
    left = producer.flush(timeout)
    if left:
        raise TimeoutError(f"{left} replayed record(s) not acknowledged within {timeout:.0f} s; "
                           "nothing was entered in the ledger for them — run the replay again")
    now = int(time.time() * 1000)
    errors: list[str] = []
    for item, partition, offset in result.sent:
        entry = ledger_entry(item.letter, item.topic, partition, offset, now)
        _produce(producer, DLQ_REPLAYS_TOPIC, {
            "key": item.letter.id.encode(), "value": json.dumps(entry).encode(),
            "on_delivery": lambda err, msg: errors.append(str(err)) if err is not None else None})
    left = producer.flush(timeout)
    if left or errors:
        raise RuntimeError(f"{len(result.sent)} record(s) were re-published but {left + len(errors)} ledger "
                           f"entries were not acknowledged ({'; '.join(errors[:3]) or 'timeout'}); a "
                           "second replay would publish those again (downstream dedups them by event id)")
    return result


def _produce(producer: Producer, topic: str, kwargs: Mapping) -> None:
    produce_waiting(producer, topic, **kwargs)
