"""Where notifications come from. Every source is one small interface, like oslo.messaging's notify
drivers: an async iterator of `Delivery` objects. The relay calls `delivery.settle()` once Kafka
acknowledged the delivery's record (or its dead letter, or it was filtered); the source then acks it
in its own terms (AMQP basic.ack, a Kafka offset commit, nothing for a file).

- `AmqpSource`: the bridge's own queue (listener-pool style) bound on the configured exchanges.
- `LinesSource`: JSON lines from a file or stdin, as `pipeline inspect` reads them.
- `OsloKafkaSource`: the topics oslo.messaging's Kafka driver writes (`<topic>.<priority>`).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import re
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Protocol

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage

from pipeline import wire
from pipeline.config import ConfigError, mask_url

from . import metrics
from .sink import _one_line, _sleep_or_stop

log = logging.getLogger("pipeline.bridge")


def _noop() -> None:
    pass


class Delivery:
    """One message from a source. `reason` is set when the source already knows the body cannot be
    decoded (e.g. a file line that is not JSON)."""

    __slots__ = ("body", "exchange", "routing_key", "settle", "reason")

    def __init__(self, body: bytes, exchange: str | None, routing_key: str | None,
                 settle: Callable[[], None] = _noop, reason: str | None = None) -> None:
        self.body = body
        self.exchange = exchange
        self.routing_key = routing_key
        self.settle = settle
        self.reason = reason


class Source(Protocol):
    description: str

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    def stop(self) -> None:
        """Take no new deliveries; the iterator ends soon after."""

    async def close(self) -> None:
        """Settle what can be settled and disconnect; unsettled deliveries come back later
        (RabbitMQ redelivers unacked messages, Kafka re-reads uncommitted offsets)."""


class _InOrder:
    """Settles out of order, confirms in order: the highest position below which everything is
    settled. AMQP acks with `multiple=True` and Kafka commits an offset only for such a prefix."""

    __slots__ = ("entries", "confirm", "scheduled")

    def __init__(self, confirm: Callable[[int], None]) -> None:
        self.entries: collections.deque[list] = collections.deque()
        self.confirm = confirm  # called with the highest contiguous settled position
        self.scheduled = False

    def track(self, position: int) -> Callable[[], None]:
        entry = [position, False]
        self.entries.append(entry)
        return partial(self._settle, entry)

    def _settle(self, entry: list) -> None:
        entry[1] = True
        if not self.scheduled:
            # Records of one produce batch resolve together: one confirm for all of them.
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        entries, last = self.entries, None
        while entries and entries[0][1]:
            last = entries.popleft()[0]
        if last is not None:
            self.confirm(last)

    def __len__(self) -> int:
        return len(self.entries)


# --- AMQP --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    url: str
    queue: str = "kafka-bridge"
    bindings: tuple[tuple[str, str], ...] = (
        ("ironic", "ironic_versioned_notifications.*"),
        ("glance", "notifications.*"),
    )
    exchange_durable: bool = False  # oslo's amqp_durable_queues default
    queue_durable: bool = True
    queue_type: str = "classic"  # or "quorum"
    passive: bool = False
    prefetch: int = 1000
    queue_arguments: dict = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None  # for amqps://


def parse_binding(text: str) -> tuple[str, str]:
    exchange, sep, routing_key = text.partition(":")
    if not sep or not exchange or not routing_key:
        raise ConfigError(f"AMQP binding {text!r} is not EXCHANGE:ROUTING_KEY")
    return exchange, routing_key


class AmqpSource:
    """The bridge's own queue, bound on the configured exchanges; reconnects with backoff.

    Deliveries of a lost connection are never acked on the next one (delivery tags belong to their
    channel); RabbitMQ gives them back, and the workers dedupe the copies by message_id.
    """

    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        self.description = f"amqp {mask_url(settings.url)} queue {settings.queue}"
        self._stopping = asyncio.Event()
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._window: _InOrder | None = None
        self._ack_tasks: set[asyncio.Task] = set()
        self.connected_once = False

    def stop(self) -> None:
        self._stopping.set()
        if self._channel is not None and self._consumer_tag is not None and not self._channel.is_closed:
            task = asyncio.get_running_loop().create_task(self._cancel(self._channel, self._consumer_tag))
            self._ack_tasks.add(task)
            task.add_done_callback(self._ack_tasks.discard)

    async def _cancel(self, channel: aiormq.abc.AbstractChannel, tag: str) -> None:
        try:
            await channel.basic_cancel(tag)
        except Exception:  # the channel went away meanwhile: nothing more will arrive anyway
            pass

    async def _declare(self, channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
        s = self.settings
        if s.passive:
            return await channel.declare_queue(s.queue, passive=True)
        arguments = dict(s.queue_arguments)
        if s.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        queue = await channel.declare_queue(
            s.queue, durable=s.queue_durable or s.queue_type == "quorum", arguments=arguments or None
        )
        for exchange_name, routing_key in s.bindings:
            exchange = await channel.declare_exchange(
                exchange_name, aio_pika.ExchangeType.TOPIC, durable=s.exchange_durable
            )
            await queue.bind(exchange, routing_key)
        return queue

    def _refused(self, exc: aiormq.exceptions.ChannelClosed) -> ConfigError:
        s = self.settings
        text = _one_line(exc)
        if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity) and s.passive:
            return ConfigError(f"RabbitMQ: {text} (--amqp-passive needs the queue {s.queue!r} to exist)")
        return ConfigError(
            f"RabbitMQ refused a declaration: {text}; match the deployment with "
            f"--amqp-exchange-durable (oslo amqp_durable_queues, now {s.exchange_durable}), "
            f"--amqp-queue-durable/--amqp-queue-type, or use --amqp-passive"
        )

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        s = self.settings
        delay = 0.5
        buffer: collections.deque[DeliveredMessage] = collections.deque()
        waiter: list[asyncio.Future | None] = [None]  # the relay loop's sleep, when it sleeps

        def wake(_: object = None) -> None:
            fut = waiter[0]
            if fut is not None and not fut.done():
                fut.set_result(None)

        async def on_message(message: DeliveredMessage) -> None:
            buffer.append(message)
            wake()

        while not self._stopping.is_set():
            try:
                connection = await aio_pika.connect(s.url, ssl_context=s.ssl_context,
                                                    client_properties={"connection_name": "pipeline-bridge"})
            except aiormq.exceptions.ProbableAuthenticationError as exc:
                if not self.connected_once:
                    raise ConfigError(f"RabbitMQ {mask_url(s.url)}: authentication failed ({_one_line(exc)})") from None
                log.warning("RabbitMQ authentication failed: %s; retrying in %.1fs", _one_line(exc), delay)
                metrics.RECONNECTS.labels("amqp").inc()
                if await _sleep_or_stop(delay, self._stopping):
                    return
                delay = min(delay * 2, 30.0)
                continue
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                log.warning("RabbitMQ %s unreachable (%s); retrying in %.1fs", mask_url(s.url), _one_line(exc), delay)
                metrics.RECONNECTS.labels("amqp").inc()
                if await _sleep_or_stop(delay, self._stopping):
                    return
                delay = min(delay * 2, 30.0)
                continue
            self._connection = connection
            try:
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=s.prefetch)
                queue = await self._declare(channel)
                raw = await channel.get_underlay_channel()
                window = _InOrder(partial(self._ack, raw))
                self._channel, self._window = raw, window
                buffer.clear()
                ok = await raw.basic_consume(queue.name, on_message, no_ack=False)
                self._consumer_tag = ok.consumer_tag
                log.info("RabbitMQ connected: %s, queue %s bound to %s (prefetch %d)", mask_url(s.url), s.queue,
                         ", ".join(f"{e}:{k}" for e, k in s.bindings) if not s.passive else "(passive)", s.prefetch)
                self.connected_once = True
                delay = 0.5
                closed = raw.closing
                closed.add_done_callback(wake)
                stopping = asyncio.ensure_future(self._stopping.wait())
                stopping.add_done_callback(wake)
                loop = asyncio.get_running_loop()
                while True:
                    while buffer:
                        message = buffer.popleft()
                        d = message.delivery
                        yield Delivery(message.body, d.exchange, d.routing_key, window.track(d.delivery_tag))
                    if self._stopping.is_set() or raw.is_closed:
                        break
                    waiter[0] = loop.create_future()
                    await waiter[0]
                    waiter[0] = None
                stopping.cancel()
                if self._stopping.is_set():
                    return  # close() flushes the acks and closes the connection
                reason = _one_line(closed.exception()) if closed.done() and not closed.cancelled() and closed.exception() else "closed"
                log.warning("RabbitMQ connection lost (%s); reconnecting", reason)
            except aiormq.exceptions.ChannelClosed as exc:
                if isinstance(exc, (aiormq.exceptions.ChannelPreconditionFailed,
                                    aiormq.exceptions.ChannelNotFoundEntity,
                                    aiormq.exceptions.ChannelAccessRefused)):
                    await _close_quietly(connection)
                    raise self._refused(exc) from None
                log.warning("RabbitMQ channel closed (%s); reconnecting", _one_line(exc))
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                log.warning("RabbitMQ connection lost (%s); reconnecting", _one_line(exc))
            self._channel = self._window = None
            self._consumer_tag = None
            await _close_quietly(connection)
            self._connection = None
            metrics.RECONNECTS.labels("amqp").inc()
            if await _sleep_or_stop(delay, self._stopping):
                return
            delay = min(delay * 2, 30.0)

    def _ack(self, channel: aiormq.abc.AbstractChannel, tag: int) -> None:
        if channel.is_closed or channel is not self._channel:
            return  # a tag of a lost channel: RabbitMQ has already requeued it
        task = asyncio.get_running_loop().create_task(self._send_ack(channel, tag))
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)

    @staticmethod
    async def _send_ack(channel: aiormq.abc.AbstractChannel, tag: int) -> None:
        try:
            await channel.basic_ack(tag, multiple=True)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError):
            pass  # the channel closed: those deliveries come back and are relayed again

    async def close(self) -> None:
        if self._window is not None:
            self._window.flush()
        if self._ack_tasks:
            await asyncio.wait(set(self._ack_tasks), timeout=5)
        if self._connection is not None:
            await _close_quietly(self._connection)
            self._connection = None


async def _close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), 5)
    except Exception:  # already closed or broken: the broker cleans up after us
        pass


# --- JSON lines (file or stdin) ------------------------------------------------------------------


class LinesSource:
    """Lines of a file (or stdin for "-"): a body as published or a capture object each."""

    def __init__(self, path: str, max_body_bytes: int = wire.MAX_BODY_BYTES) -> None:
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.description = "stdin" if path == "-" else f"file {path}"
        self._stopping = False
        self.lines = 0
        self._file = self._open()  # a missing file is a settings error, found before connecting

    def stop(self) -> None:
        self._stopping = True

    def _open(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdin.buffer
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise ConfigError(f"--source file:{self.path}: {exc.strerror}") from None

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        f = self._file
        try:
            while not self._stopping:
                # a thread keeps a slow pipe from blocking the event loop
                chunk = await asyncio.to_thread(f.readlines, 1 << 20)
                if not chunk:
                    return
                for line in chunk:
                    self.lines += 1
                    if not line.strip():
                        continue  # blank lines separate, they are not messages
                    try:
                        body, exchange, routing_key = wire.read_line(line, max_bytes=self.max_body_bytes)
                    except wire.Rejected as exc:
                        yield Delivery(line.rstrip(b"\r\n"), None, None, reason=exc.reason)
                        continue
                    yield Delivery(body, exchange, routing_key)
                    if self._stopping:
                        return
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    async def close(self) -> None:
        pass


# --- oslo.messaging's Kafka driver ----------------------------------------------------------------

OSLO_PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


def oslo_topic_pattern(topics: tuple[str, ...]) -> str:
    """`<topic>.<priority>`, and `<topic>.<priority>.<vhost>` as the driver writes with a vhost."""
    names = "|".join(re.escape(t) for t in topics)
    return rf"^(?:{names})\.(?:{'|'.join(OSLO_PRIORITIES)})(?:\.[^.]+)?$"


@dataclass(frozen=True, slots=True)
class OsloKafkaSettings:
    bootstrap_servers: list[str]
    topics: tuple[str, ...]
    group: str = "kafka-bridge"
    commit_interval_s: float = 1.0
    max_body_bytes: int = wire.MAX_BODY_BYTES
    security: dict = field(default_factory=dict)  # TLS/SASL arguments of config.kafka_client_kwargs


class OsloKafkaSource:
    """Consumes oslo's notification topics in a consumer group; commits an offset only once every
    record before it was relayed and acknowledged (enable_auto_commit off)."""

    def __init__(self, settings: OsloKafkaSettings) -> None:
        self.settings = settings
        self.description = f"oslo kafka topics {','.join(settings.topics)} group {settings.group}"
        self._stopping = asyncio.Event()
        self._consumer = None
        self._windows: dict = {}  # TopicPartition -> _InOrder
        self._committable: dict = {}  # TopicPartition -> next offset to commit

    def stop(self) -> None:
        self._stopping.set()

    def _confirm(self, tp, offset: int) -> None:
        self._committable[tp] = offset + 1

    async def _commit(self) -> None:
        if not self._committable or self._consumer is None:
            return
        offsets, self._committable = self._committable, {}
        assigned = self._consumer.assignment()
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # a rebalance: the new owner re-reads from the last commit
            log.warning("Kafka offset commit failed (%s); those records may be relayed again", _one_line(exc))

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        source = self

        class _Rebalance(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                for tp in revoked:
                    window = source._windows.pop(tp, None)
                    if window is not None:
                        window.flush()
                await source._commit()

            async def on_partitions_assigned(self, assigned):
                log.info("oslo Kafka partitions assigned: %s",
                         ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "none")

        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            group_id=s.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=30000,  # new `<topic>.<priority>` topics are picked up within 30 s
            **s.security,
        )
        consumer.subscribe(pattern=oslo_topic_pattern(s.topics), listener=_Rebalance())
        delay = 0.5
        while True:
            try:
                await consumer.start()
                break
            except Exception as exc:
                log.warning("oslo Kafka unreachable (%s); retrying in %.1fs", _one_line(exc), delay)
                metrics.RECONNECTS.labels("kafka").inc()
                if await _sleep_or_stop(delay, self._stopping):
                    return
                delay = min(delay * 2, 30.0)
        self._consumer = consumer
        log.info("oslo Kafka connected: %s, topics %s, group %s",
                 ",".join(s.bootstrap_servers), oslo_topic_pattern(s.topics), s.group)
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + s.commit_interval_s
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for tp, records in batches.items():
                window = self._windows.get(tp)
                if window is None:
                    window = self._windows[tp] = _InOrder(partial(self._confirm, tp))
                for record in records:
                    yield Delivery(record.value or b"", None, tp.topic, window.track(record.offset))
            if loop.time() >= next_commit:
                await self._commit()
                next_commit = loop.time() + s.commit_interval_s

    async def close(self) -> None:
        for window in self._windows.values():
            window.flush()
        await asyncio.sleep(0)
        await self._commit()
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self._consumer.stop(), 10)
            except Exception:
                pass
            self._consumer = None
