"""agents.send_batches: the outbox goes to the producer as record batches per topic partition, each
partition's records in the outbox's order, a full batch followed by a new one."""
from __future__ import annotations

from pipeline.streams.agents import send_batches


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple] = []

    def record_count(self) -> int:
        return len(self.records)

    def append(self, *, key, value, timestamp, headers):
        if self.records and len(self.records) >= self.capacity:
            return None  # full (the first record always fits, as aiokafka's builder does)
        assert timestamp is None  # the producer's clock, as send() would set it
        self.records.append((key, value, headers))
        return object()


class FakeProducer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, int, list]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> str:
        self.sent.append((topic, partition, batch.records))
        return f"future {len(self.sent)}"


async def test_records_go_as_batches_in_order_per_partition() -> None:
    outbox = [(topic, f"k{i}".encode(), f"v{i}".encode(), partition, [("id", str(i).encode())])
              for i, (topic, partition) in enumerate(
                  [("ops", 0), ("nodes", 0), ("ops", 1), ("ops", 0), ("ops", 0), ("nodes", 0), ("ops", 0)])]
    producer = FakeProducer(capacity=2)
    sent_batches = await send_batches(producer, outbox)
    assert sent_batches == [(f"future {n}", topic, partition, len(records))
                            for n, (topic, partition, records) in enumerate(producer.sent, 1)]
    sent: dict[tuple[str, int], list] = {}
    for topic, partition, records in producer.sent:
        assert 1 <= len(records) <= 2
        sent.setdefault((topic, partition), []).extend(records)
    expected: dict[tuple[str, int], list] = {}
    for topic, key, value, partition, headers in outbox:
        expected.setdefault((topic, partition), []).append((key, value, headers))
    assert sent == expected
    assert [(t, p) for t, p, _ in producer.sent].count(("ops", 0)) == 2  # 4 records, batches of 2


async def test_an_empty_outbox_sends_nothing() -> None:
    producer = FakeProducer(capacity=2)
    assert await send_batches(producer, []) == []
    assert producer.sent == []
