"""Which partition a key lives in: murmur2(key) mod partitions, exactly as Kafka's Java client
(and confluent-kafka's `murmur2_random`) place keyed records, so cem's batch records and an
external single-event producer agree. aiokafka's murmur2 matches Kafka's own test vectors."""
from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a non-null key (memoized: murmur2 is pure Python and the
    same customer keys come back all the time)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
