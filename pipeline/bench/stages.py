"""The benchmark's stages: the raw limits (bare aio-pika, bare aiokafka, oslo's publisher) and the
pipeline's own figures (bridge, worker, end-to-end latency, memory), each a coroutine that returns
its figures. Progress goes to `say` (stderr)."""
from __future__ import annotations

import asyncio
import re
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline import codec
from pipeline.bridge.sink import SinkSettings, check_compression, partitioner

from .procs import Proc, RecordCounter
from .records import Published

Say = Callable[[str], None]

# The bridge's producer settings (the defaults of pipeline.bridge.sink.SinkSettings, which the
# bridge's flags default to), so the bare producer differs from the bridge only by having no bridge
# around it. (Until 2026-12 this said gzip while the bridge's default is none: a lower limit.)
_SINK = SinkSettings(bootstrap_servers=[])
PRODUCER = dict(enable_idempotence=True, acks="all", linger_ms=_SINK.linger_ms,
                compression_type=check_compression(_SINK.compression), max_batch_size=_SINK.max_batch_bytes,
                max_request_size=_SINK.max_request_bytes, partitioner=partitioner)
PREFETCH = 1000  # the bridge's --amqp-prefetch default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Ticker:
    """A progress line at most once a second."""

    def __init__(self, say: Say, label: str, total: int) -> None:
        self.say, self.label, self.total = say, label, total
        self.start = self.next = time.perf_counter()

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now >= self.next:
            self.next = now + 1.0
            rate = done / max(now - self.start, 1e-9)
            self.say(f"  {self.label}: {done:,}/{self.total:,} ({rate:,.0f}/s)")


# --- RabbitMQ ---------------------------------------------------------------------------------


async def declare_queue(amqp_url: str, queue: str) -> None:
    """The queue as the bridge declares it by default (durable, classic)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)


async def fill_queue(amqp_url: str, queue: str, records: Sequence[Published], say: Say, label: str) -> float:
    """Publish every body straight into `queue` (default exchange), with publisher confirms, in
    windows of 1,000 unconfirmed; returns the publish rate."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        tick = Ticker(say, label, len(records))
        start = time.perf_counter()
        window: list[asyncio.Future] = []
        for n, record in enumerate(records, 1):
            message = aio_pika.Message(record.body, content_type="application/json", content_encoding="utf-8",
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            window.append(asyncio.ensure_future(exchange.publish(message, routing_key=queue)))
            if len(window) >= 1000:
                await asyncio.gather(*window)
                window.clear()
                tick(n)
        await asyncio.gather(*window)
        elapsed = time.perf_counter() - start
        tick(len(records), force=True)
    return len(records) / elapsed


async def amqp_drain(amqp_url: str, queue: str, expected: int, say: Say) -> float:
    """A bare aio-pika consumer (prefetch as the bridge's, acks batched with multiple=True): the
    RabbitMQ side's limit for the bridge. Timed from the first delivery to the last."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        q = await channel.declare_queue(queue, durable=True)
        done = asyncio.get_running_loop().create_future()
        count = 0
        first = 0.0
        tick = Ticker(say, "bare aio-pika drain", expected)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count, first
            if count == 0:
                first = time.perf_counter()
            count += 1
            if count % 100 == 0 or count == expected:
                await message.ack(multiple=True)
            tick(count)
            if count >= expected and not done.done():
                done.set_result(time.perf_counter())

        tag = await q.consume(on_message)
        end = await asyncio.wait_for(done, timeout=600)
        await q.cancel(tag)
        await q.delete(if_unused=False, if_empty=False)
    return (expected - 1) / max(end - first, 1e-9)


async def oslo_publish_rate(amqp_url: str, records: Sequence[Any], topics: Any, say: Say) -> float:
    """oslo.messaging's own rabbit driver, one message at a time as a service sends them."""
    from pipeline.simulate.command import unique_id
    from pipeline.simulate.outputs import RabbitOutput, oslo_url

    output = RabbitOutput(oslo_url(amqp_url), topics)
    await output.start()
    tick = Ticker(say, "oslo.messaging publish", len(records))
    start = time.perf_counter()
    for n, event in enumerate(records, 1):
        await output.send(event, unique_id(event.message_id))
        tick(n)
    elapsed = time.perf_counter() - start
    await output.close()
    if output.failures:
        raise RuntimeError(f"oslo failed to send {output.failures} notifications: {output._errors.last}")
    return len(records) / elapsed


# --- Kafka --------------------------------------------------------------------------------------


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, partitions, 1) for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


async def kafka_produce(bootstrap: str, records: Sequence[tuple], partitions: int, say: Say) -> float:
    """A bare aiokafka producer (the bridge's settings) writing the bridge's records; timed from the
    first send to the last acknowledgement."""
    await create_topics(bootstrap, [r[0] for r in records], partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap.split(","), client_id="pipeline-bench", **PRODUCER)
    await producer.start()
    try:
        for topic in dict.fromkeys(r[0] for r in records):  # leaders known before the clock starts
            await producer.partitions_for(topic)
        await asyncio.sleep(1.0)
        tick = Ticker(say, "bare aiokafka produce", len(records))
        start = time.perf_counter()
        pending: list[asyncio.Future] = []
        for n, (topic, key, value, headers) in enumerate(records, 1):
            pending.append(await producer.send(topic, value, key=key, headers=headers))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                tick(n)
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
        tick(len(records), force=True)
    finally:
        await producer.stop()
    return len(records) / elapsed


async def kafka_consume(bootstrap: str, topics: Sequence[str], expected: int, say: Say) -> float:
    """A bare aiokafka consumer reading `topics` from the start (values decoded by nobody)."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap.split(","), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        count = 0
        first = 0.0
        tick = Ticker(say, "bare aiokafka consume", expected)
        deadline = time.monotonic() + 600
        while count < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            for records in batch.values():
                if count == 0 and records:
                    first = time.perf_counter()
                count += len(records)
            tick(count)
        end = time.perf_counter()
    finally:
        await consumer.stop()
    if count < expected:
        raise RuntimeError(f"bare consumer read {count} of {expected} records")
    return count / max(end - first, 1e-9)


@dataclass
class Window:
    """Progress samples of processes working through a backlog, from the first sample that saw a
    record to the last: their rate, and the CPU time they spent per record in between (steadier
    than a rate on a shared machine, and blind to start-up and idle time)."""

    first: tuple[float, int, float] | None = None  # (time, records, CPU seconds)
    last: tuple[float, int, float] | None = None

    def add(self, now: float, records: int, cpu_seconds: float) -> None:
        if self.first is None and records > 0:
            self.first = (now, records, cpu_seconds)
        if self.first is not None:
            self.last = (now, records, cpu_seconds)

    @property
    def records(self) -> int:
        return self.last[1] - self.first[1] if self.first and self.last else 0

    @property
    def rate(self) -> float:
        if not self.records:
            return float("nan")
        return self.records / max(self.last[0] - self.first[0], 1e-9)

    @property
    def cpu_us_per_event(self) -> float:
        if not self.records:
            return float("nan")
        return (self.last[2] - self.first[2]) / self.records * 1e6


def cpu_of(procs: Sequence[Proc]) -> float:
    """CPU seconds of `procs` together (a process that exited counts as nothing more)."""
    return sum(p.cpu_seconds() or 0.0 for p in procs)


async def wait_relayed(bridge: Proc, bootstrap: str, topics: Sequence[str], expected: int, say: Say,
                       timeout: float = 900) -> Window:
    """The bridge's relay on a full queue: records counted in Kafka (end offsets), from the first
    to the `expected`-th, sampling the bridge's memory and CPU on the way."""
    async with RecordCounter(bootstrap, topics) as counter:
        return await _wait_relayed(bridge, counter, expected, say, timeout)


async def _wait_relayed(bridge: Proc, counter: RecordCounter, expected: int, say: Say, timeout: float) -> Window:
    tick = Ticker(say, "bridge relay", expected)
    window = Window()
    deadline = time.monotonic() + timeout
    while True:
        n = await counter.count()
        window.add(time.perf_counter(), n, cpu_of([bridge]))
        bridge.sample()
        tick(n)
        if n >= expected:
            return window
        if not bridge.alive():
            raise RuntimeError(f"bridge exited: {bridge.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"bridge relayed {n} of {expected} in {timeout:.0f}s")
        await asyncio.sleep(0.5)


_RELAY_RECORDS = re.compile(rb"^pipeline_relay_records(?:_total)?(?:\{[^}]*\})? ([0-9.e+]+)", re.M)


def worker_records(port: int) -> int | None:
    """Relay records the worker has read, from its /metrics; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read()
    except OSError:
        return None
    match = _RELAY_RECORDS.search(text)
    return int(float(match.group(1))) if match else None


async def committed(bootstrap: str, group: str) -> int:
    """Fallback progress: the worker's committed offsets (faust commits every few seconds)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(max(0, meta.offset) for tp, meta in offsets.items() if ".notifications." in tp.topic)
    except Exception:  # noqa: BLE001 - the group may not exist yet
        return 0
    finally:
        await admin.close()


async def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, members) of a consumer group; ("", 0) while it does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        for response in await admin.describe_consumer_groups([group]):
            for entry in response.groups:  # (error, group id, state, protocol type, protocol, members, ...)
                if entry[1] == group:
                    return entry[2], len(entry[5])
        return "", 0
    except Exception:  # noqa: BLE001 - no coordinator yet: not there
        return "", 0
    finally:
        await admin.close()


async def wait_group(bootstrap: str, group: str, members: int, say: Say, procs: Sequence[Proc],
                     timeout: float = 180) -> int:
    """Wait until `group` is Stable with `members` members (then 2 s more, for the assignment to
    reach every member)."""
    deadline = time.monotonic() + timeout
    state, count = "", 0
    while time.monotonic() < deadline:
        state, count = await group_members(bootstrap, group)
        if state == "Stable" and count >= members:
            await asyncio.sleep(2.0)
            return count
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited: {p.tail()}")
        await asyncio.sleep(0.5)
    raise TimeoutError(f"group {group} is {state or 'absent'} with {count} of {members} members after {timeout:.0f}s")


async def wait_worker(worker: Proc, port: int, bootstrap: str, group: str, expected: int, say: Say,
                      label: str = "worker", timeout: float = 900) -> tuple[Window, str]:
    """One worker's rate on a full topic (see `wait_workers`)."""
    return await wait_workers([(worker, port)], bootstrap, group, expected, say, label, timeout)


async def wait_workers(workers: Sequence[tuple[Proc, int]], bootstrap: str, group: str, expected: int, say: Say,
                       label: str = "worker", timeout: float = 900) -> tuple[Window, str]:
    """Workers of one group on a full topic: relay records read (the sum of their /metrics, else
    the group's committed offsets), from the first to the `expected`-th, with their CPU time.
    Returns (the window, how records were counted)."""
    tick = Ticker(say, label, expected)
    window = Window()
    source = "metrics"
    procs = [w for w, _ in workers]
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if source == "metrics":
            counts = [worker_records(port) for _, port in workers]
            n = sum(c or 0 for c in counts)
            if None in counts and n == 0 and time.monotonic() > started + 90:  # no /metrics after 90 s
                source = "committed offsets"
        else:
            n = await committed(bootstrap, group)
        window.add(time.perf_counter(), n, cpu_of(procs))
        for w in procs:
            w.sample()
        tick(n)
        if n >= expected:
            return window, source
        for w in procs:
            if not w.alive():
                raise RuntimeError(f"{w.name} exited: {w.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label} read {n} of {expected} in {timeout:.0f}s")
        # rendering /metrics costs the worker ~20 ms (measured under cProfile): once a second is
        # enough for a rate over tens of seconds and keeps the probe out of the figure
        await asyncio.sleep(1.0)


# --- end to end ---------------------------------------------------------------------------------


async def _tail(bootstrap: str, topics: Sequence[str]) -> AIOKafkaConsumer:
    """A consumer positioned at the end of `topics` (reads only what comes next)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    partitions = [TopicPartition(t, p) for t in topics
                  for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    return consumer


async def end_to_end(amqp_url: str, bootstrap: str, operations_topic: str, records: Sequence[Published],
                     rate: float, say: Say, relay_topics: Sequence[str] = (), settle_s: float = 15.0) -> dict[str, Any]:
    """Publish `records` at `rate` per second through the exchanges (routing keys as oslo's), and
    time each terminal event from its publish to its operation record in Kafka (the record's
    timestamp, set by the worker's producer; the time our consumer received it is kept too).
    The relay records of the same terminal events (their `message_id` header) split that time into
    the bridge's part (publish -> relay record) and the worker's (relay record -> operation record)."""
    consumer = await _tail(bootstrap, [operations_topic])
    relay = await _tail(bootstrap, relay_topics) if relay_topics else None
    relayed: dict[str, float] = {}
    bridge_part: list[float] = []
    worker_part: list[float] = []

    published: dict[str, float] = {}
    by_record: list[float] = []
    by_receipt: list[float] = []
    done = asyncio.Event()

    async def read_relay() -> None:
        while relay is not None and not (done.is_set() and time.monotonic() > settle_deadline):
            batch = await relay.getmany(timeout_ms=100)
            for items in batch.values():
                for item in items:
                    message_id = dict(item.headers).get("message_id", b"").decode()
                    sent = published.get(message_id)
                    if sent is not None:
                        relayed[message_id] = item.timestamp / 1000.0
                        bridge_part.append(item.timestamp / 1000.0 - sent)

    async def read() -> None:
        while not done.is_set() or len(by_record) < len(published):
            batch = await consumer.getmany(timeout_ms=100)
            received = time.time()
            for items in batch.values():
                for item in items:
                    record = codec.decode_value(item.value)
                    end_id = record.get("end_message_id") or ""
                    sent = published.get(end_id)
                    if sent is not None:
                        by_record.append(item.timestamp / 1000.0 - sent)
                        by_receipt.append(received - sent)
                        if end_id in relayed:
                            worker_part.append(item.timestamp / 1000.0 - relayed[end_id])
            if done.is_set() and time.monotonic() > settle_deadline:
                return

    settle_deadline = float("inf")
    reader = asyncio.create_task(read())
    relay_reader = asyncio.create_task(read_relay())
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
    finally:
        await connection.close()
    settle_deadline = time.monotonic() + settle_s
    done.set()
    await reader
    await relay_reader
    await consumer.stop()
    if relay is not None:
        await relay.stop()

    def ms(values: list[float], q: float) -> float | None:
        return round(percentile(values, q) * 1000, 1) if values else None

    return {
        "e2e_bridge_p50_ms": ms(bridge_part, 50), "e2e_bridge_p99_ms": ms(bridge_part, 99),
        "e2e_worker_p50_ms": ms(worker_part, 50), "e2e_worker_p99_ms": ms(worker_part, 99),
        "e2e_offered_rate": round(offered, 1),
        "e2e_publisher_max_lag_ms": round(lag * 1000, 1),
        "e2e_operations": len(published),
        "e2e_matched": len(by_record),
        "e2e_p50_ms": round(statistics.median(by_record) * 1000, 1) if by_record else None,
        "e2e_p99_ms": round(percentile(by_record, 99) * 1000, 1) if by_record else None,
        "e2e_max_ms": round(max(by_record) * 1000, 1) if by_record else None,
        "e2e_received_p50_ms": round(statistics.median(by_receipt) * 1000, 1) if by_receipt else None,
        "e2e_received_p99_ms": round(percentile(by_receipt, 99) * 1000, 1) if by_receipt else None,
    }


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return found
        await asyncio.sleep(0.2)
    raise RuntimeError(f"topic {topic} has no partitions (is the worker running?)")
