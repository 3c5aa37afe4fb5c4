"""The bridge partitions keyed records exactly as the Java client's default partitioner:
Utils.toPositive(Utils.murmur2(key)) % numPartitions."""
from __future__ import annotations

import uuid

from aiokafka.partitioner import murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.bridge.sink import java_partition, partitioner

# Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java (testMurmur2), the values
# of Java's signed int Utils.murmur2(key.getBytes()).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def java_int(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def reference_murmur2(data: bytes) -> int:
    """Written from Utils.murmur2 in Java (32-bit signed arithmetic, >>> as unsigned shift)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = java_int(0x9747B28C ^ length)
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = java_int(k * m)
        k ^= (k & 0xFFFFFFFF) >> r
        k = java_int(k * m)
        h = java_int(h * m)
        h = java_int(h ^ k)
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h = java_int(h ^ (data[tail + 2] << 16))
    if rest >= 2:
        h = java_int(h ^ (data[tail + 1] << 8))
    if rest >= 1:
        h = java_int(h ^ data[tail])
        h = java_int(h * m)
    h = java_int(h ^ ((h & 0xFFFFFFFF) >> 13))
    h = java_int(h * m)
    h = java_int(h ^ ((h & 0xFFFFFFFF) >> 15))
    return h


def to_positive(n: int) -> int:
    return n & 0x7FFFFFFF


def test_aiokafka_murmur2_matches_java_vectors() -> None:
    for key, expected in JAVA_MURMUR2.items():
        assert java_int(murmur2(key)) == expected, key


def test_reference_matches_java_vectors() -> None:
    for key, expected in JAVA_MURMUR2.items():
        assert reference_murmur2(key) == expected, key


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_aiokafka_murmur2_matches_reference(data: bytes) -> None:
    assert java_int(murmur2(data)) == reference_murmur2(data)


@settings(max_examples=300, deadline=None)
@given(st.uuids(), st.integers(min_value=1, max_value=200))
def test_partition_of_uuid_key_is_java_default(u: uuid.UUID, n: int) -> None:
    key = str(u).encode()
    expected = to_positive(reference_murmur2(key)) % n
    assert java_partition(key, n) == expected
    assert partitioner(key, list(range(n)), list(range(n))) == expected


def test_known_partitions() -> None:
    # toPositive(-973932308) = 1173551340; % 6 = 0, % 12 = 0, % 7 = 6 (computed by hand)
    assert to_positive(-973932308) == 1173551340
    assert java_partition(b"21", 6) == 1173551340 % 6
    assert java_partition(b"21", 7) == 1173551340 % 7


def test_partition_ignores_availability_for_keys() -> None:
    # Java keeps a keyed record on its hash partition even when that partition's leader is down
    assert partitioner(b"21", [0, 1, 2, 3], [1]) == java_partition(b"21", 4)


def test_null_key_goes_to_an_available_partition() -> None:
    for _ in range(50):
        assert partitioner(None, [0, 1, 2, 3], [2, 3]) in (2, 3)
