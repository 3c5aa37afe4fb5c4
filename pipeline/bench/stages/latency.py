"""The end-to-end stage: events published at a fixed rate through RabbitMQ, bridge and worker, each
terminal event timed from its publish to its operation record in Kafka."""
from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import codec, events

from ..procs import CpuShare
from ..records import Published
from .progress import Say, Ticker

_HEARTBEAT = events.HEARTBEAT_EVENT_TYPE.encode()
UNMATCHED_LISTED = 1000


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def end_to_end(amqp_url: str, bootstrap: str, operations_topic: str, records: Sequence[Published],
                     rate: float, say: Say, relay_topics: Sequence[str] = (), settle_s: float = 15.0,
                     pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Publish `records` at `rate` per second through the exchanges (routing keys as oslo's), and
    time each terminal event from its publish to its operation record in Kafka (the record's
    timestamp, set by the worker's producer; the time our consumer received it is kept too).
    The relay records of the same terminal events (their `message_id` header) split that time into
    the bridge's part (publish -> relay record) and the worker's (relay record -> operation record).
    While publishing, the machine's busy share and the cores each of `pids` used are measured too
    (`e2e_machine_busy`, `e2e_<name>_cores`)."""
    consumer = await _tail(bootstrap, [operations_topic])
    relay = await _tail(bootstrap, relay_topics) if relay_topics else None
    trips, settling = _Trips(), _Settling()
    reader = asyncio.create_task(_read_operations(consumer, trips, settling))
    relay_reader = asyncio.create_task(_read_relay(relay, trips, settling))
    cpu = CpuShare(pids or {})
    offered, lag, window = await publish_on_schedule(amqp_url, records, rate, say, trips.published)
    share = cpu.figures()
    trips.window = window
    settling.begin(settle_s)
    await reader
    settling.shorten(1.0)  # every operation seen: their relay records too, give or take a fetch
    await relay_reader
    await consumer.stop()
    if relay is not None:
        await relay.stop()
    return {**trips.figures(offered, lag), **{f"e2e_{key}": value for key, value in share.items()}}


@dataclass
class _Trips:
    """Publish times of the terminal events (by message id) and the times measured against them."""

    published: dict[str, float] = field(default_factory=dict)
    matched: set[str] = field(default_factory=set)  # message ids of the terminal events whose record came
    relayed: dict[str, float] = field(default_factory=dict)  # relay record timestamps, by message id
    by_record: list[float] = field(default_factory=list)  # publish -> operation record's timestamp
    by_receipt: list[float] = field(default_factory=list)  # publish -> our consumer received it
    bridge_part: list[float] = field(default_factory=list)  # publish -> relay record
    worker_part: list[float] = field(default_factory=list)  # relay record -> operation record
    relay_times: list[float] = field(default_factory=list)  # timestamps of the relay records (no heartbeats)
    window: tuple[float, float] = (0.0, 0.0)  # the publisher's first and last send (time.time())

    def relayed_in_window(self) -> int:
        """Relay records the bridge wrote while the publisher sent (its heartbeats not counted):
        what the CPU measured over the same window was spent on."""
        start, end = self.window
        return sum(1 for t in self.relay_times if start <= t <= end)

    def figures(self, offered: float, lag: float) -> dict[str, Any]:
        def ms(values: list[float], q: float) -> float | None:
            return round(percentile(values, q) * 1000, 1) if values else None

        by_record, by_receipt = self.by_record, self.by_receipt
        return {
            "e2e_bridge_p50_ms": ms(self.bridge_part, 50), "e2e_bridge_p99_ms": ms(self.bridge_part, 99),
            "e2e_worker_p50_ms": ms(self.worker_part, 50), "e2e_worker_p99_ms": ms(self.worker_part, 99),
            "e2e_offered_rate": round(offered, 1),
            "e2e_publish_seconds": round(self.window[1] - self.window[0], 3),
            "e2e_relayed": self.relayed_in_window(),
            "e2e_publisher_max_lag_ms": round(lag * 1000, 1),
            "e2e_operations": len(self.published),
            "e2e_matched": len(by_record),
            "e2e_p50_ms": round(statistics.median(by_record) * 1000, 1) if by_record else None,
            "e2e_p99_ms": round(percentile(by_record, 99) * 1000, 1) if by_record else None,
            "e2e_max_ms": round(max(by_record) * 1000, 1) if by_record else None,
            "e2e_received_p50_ms": round(statistics.median(by_receipt) * 1000, 1) if by_receipt else None,
            "e2e_received_p99_ms": round(percentile(by_receipt, 99) * 1000, 1) if by_receipt else None,
            # which ones did not come within the settling time (late or lost: a reader of the whole
            # topic can tell, as the soak does); the first UNMATCHED_LISTED of them
            "e2e_unmatched_ids": sorted(set(self.published) - self.matched)[:UNMATCHED_LISTED],
        }


class _Settling:
    """Once publishing is over the readers go on for `settle_s` more, for the records still on
    their way; until then they never stop."""

    def __init__(self) -> None:
        self.done = False
        self.deadline = math.inf

    def begin(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.done = True

    def shorten(self, seconds: float) -> None:
        self.deadline = min(self.deadline, time.monotonic() + seconds)

    def over(self) -> bool:
        return self.done and time.monotonic() > self.deadline


async def _read_relay(relay: AIOKafkaConsumer | None, trips: _Trips, settling: _Settling) -> None:
    while relay is not None and not settling.over():
        batch = await relay.getmany(timeout_ms=100)
        for items in batch.values():
            for item in items:
                headers = dict(item.headers)
                if headers.get("event_type") != _HEARTBEAT:
                    trips.relay_times.append(item.timestamp / 1000.0)
                message_id = headers.get("message_id", b"").decode()
                sent = trips.published.get(message_id)
                if sent is not None:
                    trips.relayed[message_id] = item.timestamp / 1000.0
                    trips.bridge_part.append(item.timestamp / 1000.0 - sent)


async def _read_operations(consumer: AIOKafkaConsumer, trips: _Trips, settling: _Settling) -> None:
    while not settling.done or len(trips.by_record) < len(trips.published):
        batch = await consumer.getmany(timeout_ms=100)
        received = time.time()
        for items in batch.values():
            for item in items:
                record = codec.decode_value(item.value)
                end_id = record.get("end_message_id") or ""
                sent = trips.published.get(end_id)
                if sent is not None and end_id not in trips.matched:
                    trips.matched.add(end_id)
                    trips.by_record.append(item.timestamp / 1000.0 - sent)
                    trips.by_receipt.append(received - sent)
                    if end_id in trips.relayed:
                        trips.worker_part.append(item.timestamp / 1000.0 - trips.relayed[end_id])
        if settling.over():
            return


async def publish_on_schedule(amqp_url: str, records: Sequence[Published], rate: float, say: Say,
                              published: dict[str, float]) -> tuple[float, float, tuple[float, float]]:
    """Publish `records` on schedule, noting when each terminal event went out in `published`.
    Returns (the rate offered, the publisher's largest lag behind its schedule in seconds, the
    wall-clock times of the first and the last send)."""
    connection = await aio_pika.connect(amqp_url)
    tick = Ticker(say, f"end to end at {rate:,.0f}/s", len(records))
    try:
        channel = await connection.channel(publisher_confirms=False)
        for name in {r.exchange for r in records}:
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=False)
        # aiormq's publish, under aio-pika's: 47 µs of CPU a message here against aio-pika's 186, so
        # the publisher can offer 5,000/s next to bridge, worker and brokers (same properties as oslo)
        raw = await channel.get_underlay_channel()
        start = time.perf_counter()
        first = time.time()
        lag = 0.0
        for n, r in enumerate(records):
            due = start + n / rate
            now = time.perf_counter()
            if due > now + 0.002:  # ahead: sleep; a sleep per message would cost more than the publish
                await asyncio.sleep(due - now)
            elif due < now:
                lag = max(lag, now - due)
            if r.end_key is not None:
                published[r.end_key[2]] = time.time()
            await raw.basic_publish(r.body, exchange=r.exchange, routing_key=r.routing_key,
                                    properties=aiormq.spec.Basic.Properties(
                                        content_type="application/json", content_encoding="utf-8", delivery_mode=2))
            tick(n + 1)
        offered = len(records) / (time.perf_counter() - start)
        last = time.time()
    finally:
        await connection.close()
    return offered, lag, (first, last)


async def _tail(bootstrap: str, topics: Sequence[str]) -> AIOKafkaConsumer:
    """A consumer positioned at the end of `topics` (reads only what comes next). Its fetches are
    answered in rounds (64 KB or 50 ms), like the worker's: fetching as soon as one record is there,
    the two tails cost this process 0.13 more of a core at 1,000/s, CPU the bridge and the worker
    measured here then lack. The stage times records by their timestamps, so only the
    `e2e_received_*` figures include the wait."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                                enable_auto_commit=False, fetch_min_bytes=64 * 1024, fetch_max_wait_ms=50)
    await consumer.start()
    partitions = [TopicPartition(t, p) for t in topics
                  for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    return consumer


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return found
        await asyncio.sleep(0.2)
    raise RuntimeError(f"topic {topic} has no partitions (is the worker running?)")
