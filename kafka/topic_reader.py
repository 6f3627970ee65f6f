"""Read a topic (or some of its partitions) from its earliest retained record up to its end as
of the call — the one whole-topic reader behind state restore, the identity replay, `cem demo`'s
DLQ summary, `cem identity unmerge` and the tests.

Contract: records come in offset order per partition; the end is fixed when the call starts
(records appended later are not waited for); gaps left by compaction or transaction markers are
handled by tracking each partition's position, not by counting records. Raises TimeoutError,
naming the topic, if the end is not reached within `timeout` seconds.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from cem.kafka.connection import KafkaConnection


def read_to_end(kafka: KafkaConnection, topic: str, partitions: Iterable[int] | None = None,
                timeout: float = 60.0) -> Iterator[Any]:
    """Yield confluent-kafka Messages (errors skipped) of `topic` up to the end at call time."""
    c = Consumer(kafka.client_config(**{"group.id": "cem-topic-reader",
                                         "enable.auto.commit": False, "enable.partition.eof": False,
                                         "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20}))
    try:
        if partitions is None:
            md = c.list_topics(topic, timeout=min(timeout, 30)).topics[topic]
            if md.error is not None:
                raise RuntimeError(f"cannot read {topic}: {md.error}; does the topic exist? (`cem topics create`)")
            partitions = list(md.partitions)
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=min(timeout, 30))
            if high > low:
                ends[p] = high
        if not ends:
            return
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} was not read to its end within {timeout:.0f} s "
                                   f"(partitions left: {sorted(ends)}); is the broker reachable?")
            msgs = c.consume(5000, 0.5)
            if not msgs:  # only markers or compacted gaps left: ask where the consumer stands
                for tp in c.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends[tp.partition]:
                        del ends[tp.partition]
            for m in msgs:
                part, offset = m.partition(), m.offset()
                if part not in ends:
                    continue
                if m.error() is None:
                    yield m
                if offset is not None and offset + 1 >= ends[part]:
                    del ends[part]
    finally:
        c.close()
