"""Kafka's own murmur2 test vectors (clients/src/test/.../utils/UtilsTest.java)."""
import pytest
from aiokafka.partitioner import murmur2

from cem.kafka.partitioning import partition_for

VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key, expected", VECTORS.items())
def test_murmur2_matches_kafka_java_client(key, expected):
    signed = murmur2(key) - (1 << 32) if murmur2(key) >= 1 << 31 else murmur2(key)
    assert signed == expected


@pytest.mark.parametrize("key, expected", VECTORS.items())
def test_partition_is_positive_murmur2_mod_n(key, expected):
    for n in (1, 3, 4, 12):
        assert partition_for(key, n) == (expected & 0x7FFFFFFF) % n
