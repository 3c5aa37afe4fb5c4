"""The raw limits of this machine, measured on the bench's own records: a bare aio-pika consumer
draining a queue, a bare aiokafka producer and consumer, and oslo.messaging's own publisher."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aio_pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.bridge.sink import SinkSettings, check_compression, partitioner

from ..records import Published
from .progress import Say, Ticker

T = TypeVar("T")

# The bridge's producer settings (the defaults of pipeline.bridge.sink.SinkSettings, which the
# bridge's flags default to), so the bare producer differs from the bridge only by having no bridge
# around it. (Until 2026-12 this said gzip while the bridge's default is none: a lower limit.)
_SINK = SinkSettings(bootstrap_servers=[])
PRODUCER = dict(enable_idempotence=True, acks="all", linger_ms=_SINK.linger_ms,
                compression_type=check_compression(_SINK.compression), max_batch_size=_SINK.max_batch_bytes,
                max_request_size=_SINK.max_request_bytes, partitioner=partitioner)
PREFETCH = 1000  # the bridge's --amqp-prefetch default


async def confirmed_rate(items: Sequence[T], send: Callable[[T], Awaitable[Awaitable[object]]], window: int,
                         tick: Ticker) -> float:
    """Send every item, `window` of them unconfirmed at most; `send` returns what completes with
    the item's confirmation. The rate from the first send to the last confirmation."""
    start = time.perf_counter()
    pending: list[Awaitable[object]] = []
    for n, item in enumerate(items, 1):
        pending.append(await send(item))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
            tick(n)
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - start
    tick(len(items), force=True)
    return len(items) / elapsed


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

        async def publish(record: Published) -> Awaitable[object]:
            message = aio_pika.Message(record.body, content_type="application/json", content_encoding="utf-8",
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            return asyncio.ensure_future(exchange.publish(message, routing_key=queue))

        return await confirmed_rate(records, publish, 1000, Ticker(say, label, len(records)))


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

        async def send(record: tuple) -> Awaitable[object]:
            topic, key, value, headers = record
            return await producer.send(topic, value, key=key, headers=headers)

        return await confirmed_rate(records, send, 5000, Ticker(say, "bare aiokafka produce", len(records)))
    finally:
        await producer.stop()


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
