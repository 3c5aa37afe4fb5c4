"""The sink's produce rounds without a broker: what goes out together, what waits for the round
before it, order per key, and what a failed or abandoned round does to its records' futures.
A stand-in producer records the closed batches it is handed (the real producer: tests/integration)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber

from pipeline.bridge.sink import SinkSettings, _Rounds, java_partition

PARTITIONS = 3


class Batch:
    def __init__(self, limit: int) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.closed = False
        self.limit = limit

    def append(self, *, timestamp, key, value, headers):
        assert not self.closed and isinstance(headers, list)
        if self.records and len(self.records) >= self.limit:
            return None  # full: aiokafka's builder says so the same way
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class Producer:
    def __init__(self, batch_limit: int = 1000) -> None:
        self.client = SimpleNamespace(cluster=SimpleNamespace(partitions_for_topic=lambda t: set(range(PARTITIONS))))
        self.handed: list[tuple[str, int, Batch, asyncio.Future]] = []
        self.batch_limit = batch_limit

    def create_batch(self) -> Batch:
        return Batch(self.batch_limit)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        assert batch.closed, "a batch handed over open would linger and take aiokafka's own sends"
        fut = asyncio.get_running_loop().create_future()
        self.handed.append((topic, partition, batch, fut))
        return fut


def rounds(producer: Producer, **kw) -> tuple[_Rounds, asyncio.Future]:
    dropped = asyncio.get_running_loop().create_future()
    settings = SinkSettings(bootstrap_servers=["x:1"], linger_ms=kw.pop("linger_ms", 0), **kw)
    return _Rounds(producer, settings, dropped), dropped


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def key(n: int) -> bytes:
    return f"node-{n}".encode()


async def test_one_round_holds_everything_added_meanwhile_one_batch_per_partition() -> None:
    producer = Producer()
    r, _ = rounds(producer)
    futures = [r.add("t.node", f"v{n}".encode(), key(n % 4), ()) for n in range(12)]
    futures.append(r.add("t.image", b"i", b"image-1", ()))
    assert producer.handed == []  # nothing before the linger has passed
    await settle()
    handed = {(topic, p): [v for _, v in batch.records] for topic, p, batch, _ in producer.handed}
    assert len(producer.handed) == len(handed)  # one batch per partition
    for topic, p in handed:
        assert all(java_partition(k, PARTITIONS) == p for k, _ in
                   next(b for t, q, b, _ in producer.handed if (t, q) == (topic, p)).records)
    by_key = {}
    for _topic, _p, batch, _ in producer.handed:
        for k, v in batch.records:
            by_key.setdefault(k, []).append(v)
    assert by_key[key(0)] == [b"v0", b"v4", b"v8"]  # a key's records in their arrival order
    assert not any(f.done() for f in futures)  # not before Kafka answered
    for *_, fut in producer.handed:
        fut.set_result("metadata")
    await settle()
    assert all(f.result() == "metadata" for f in futures)


async def test_the_next_round_waits_for_the_whole_round_before_it() -> None:
    producer = Producer()
    r, _ = rounds(producer)
    first = [r.add("t.node", b"a", key(1), ()), r.add("t.node", b"b", key(2), ())]
    await settle()
    handed = len(producer.handed)
    later = r.add("t.node", b"c", key(1), ())
    await settle()
    assert len(producer.handed) == handed  # c waits: its key's earlier record is still with Kafka
    producer.handed[0][3].set_result("m")
    await settle()
    assert len(producer.handed) == handed  # half the round answered is not the round
    for *_, fut in producer.handed[1:]:
        fut.set_result("m")
    await settle()
    assert len(producer.handed) == handed + 1 and producer.handed[-1][2].records == [(key(1), b"c")]
    assert all(f.done() for f in first) and not later.done()


async def test_a_failed_batch_fails_only_its_own_records() -> None:
    producer = Producer()
    r, _ = rounds(producer)
    futures = {n: r.add("t.node", str(n).encode(), key(n), ()) for n in range(6)}
    await settle()
    failed_topic, failed_p, failed_batch, failed_fut = producer.handed[0]
    failed_fut.set_exception(OutOfOrderSequenceNumber())
    for *_, fut in producer.handed[1:]:
        fut.set_result("m")
    await settle()
    failed = {n for n, f in futures.items() if f.exception() is not None}
    assert failed == {int(v) for _, v in failed_batch.records}
    assert all(isinstance(futures[n].exception(), OutOfOrderSequenceNumber) for n in failed)
    assert all(futures[n].result() == "m" for n in set(futures) - failed)


async def test_a_full_batch_is_followed_by_another_in_order() -> None:
    producer = Producer(batch_limit=2)
    r, _ = rounds(producer)
    for n in range(5):
        r.add("t.node", str(n).encode(), key(1), ())
    await settle()
    assert [[v for _, v in b.records] for _, _, b, _ in producer.handed] == [[b"0", b"1"], [b"2", b"3"], [b"4"]]


async def test_an_abandoned_producer_finishes_nothing_more() -> None:
    producer = Producer()
    r, dropped = rounds(producer)
    running = r.add("t.node", b"a", key(1), ())
    await settle()
    waiting = r.add("t.node", b"b", key(1), ())
    dropped.set_result(None)  # KafkaSink.abandon: the relay produces both again on a new producer
    await settle()
    producer.handed[0][3].set_result("late")  # what the old producer still reports is ignored
    await settle()
    assert not running.done() and not waiting.done() and len(producer.handed) == 1


async def test_a_record_larger_than_a_request_is_refused_at_once() -> None:
    r, _ = rounds(Producer(), max_request_bytes=1000)
    with pytest.raises(MessageSizeTooLargeError):
        r.add("t.node", b"x" * 2000, key(1), ())
    assert r.waiting == {}


async def test_a_quiet_bridge_sends_within_the_linger() -> None:
    producer = Producer()
    r, _ = rounds(producer, linger_ms=20)
    r.add("t.node", b"a", key(1), ())
    await asyncio.sleep(0.005)
    assert producer.handed == []
    await asyncio.sleep(0.05)
    assert len(producer.handed) == 1
