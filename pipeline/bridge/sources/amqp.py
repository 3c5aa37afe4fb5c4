"""The bridge's own RabbitMQ queue (listener-pool style), bound on the configured exchanges."""
from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from pipeline.backoff import Backoff
from pipeline.config import ConfigError, mask_url

from .. import metrics
from ..sink import _one_line
from .base import Delivery, InOrder
from .intake import Intake, PacedTransports
from .intake import connect as paced_connect

log = logging.getLogger("pipeline.bridge")

# RabbitMQ will refuse these declarations again on every reconnect: they are settings errors
_REFUSALS = (aiormq.exceptions.ChannelPreconditionFailed, aiormq.exceptions.ChannelNotFoundEntity,
             aiormq.exceptions.ChannelAccessRefused)


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
    intake_ms: float = 10.0  # reading paused this long after a delivery (intake.Intake)


def parse_binding(text: str) -> tuple[str, str]:
    exchange, sep, routing_key = text.partition(":")
    if not sep or not exchange or not routing_key:
        raise ConfigError(f"AMQP binding {text!r} is not EXCHANGE:ROUTING_KEY")
    return exchange, routing_key


class _Inbox:
    """Messages the channel handed over and the relay has not taken yet. The consuming loop sleeps
    on `wait()` while it is empty; a message, the channel closing or stop() wakes it."""

    __slots__ = ("messages", "waiter", "intake")

    def __init__(self, intake: Intake) -> None:
        self.messages: collections.deque[DeliveredMessage] = collections.deque()
        self.waiter: asyncio.Future | None = None
        self.intake = intake

    def wake(self, _: object = None) -> None:
        fut = self.waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def on_message(self, message: DeliveredMessage) -> None:
        self.messages.append(message)
        self.intake.delivered()
        self.wake()

    async def wait(self) -> None:
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        await waiter
        self.waiter = None


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
        self._window: InOrder | None = None
        self._transports = PacedTransports()
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

    async def _connect(self, backoff: Backoff) -> aio_pika.abc.AbstractConnection | None:
        """A connection, or None (logged and counted) when RabbitMQ does not take one now. Refused
        credentials end the bridge only before it ever connected: later they are a broker's hiccup."""
        s = self.settings
        try:
            return await paced_connect(s.url, self._transports, ssl_context=s.ssl_context,
                                       client_properties={"connection_name": "pipeline-bridge"})
        except aiormq.exceptions.ProbableAuthenticationError as exc:
            if not self.connected_once:
                raise ConfigError(f"RabbitMQ {mask_url(s.url)}: authentication failed ({_one_line(exc)})") from None
            log.warning("RabbitMQ authentication failed: %s; retrying in %.1fs", _one_line(exc), backoff.delay)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            log.warning("RabbitMQ %s unreachable (%s); retrying in %.1fs", mask_url(s.url), _one_line(exc), backoff.delay)
        metrics.RECONNECTS.labels("amqp").inc()
        return None

    async def _subscribe(self, connection: aio_pika.abc.AbstractConnection,
                         inbox: _Inbox) -> tuple[aiormq.abc.AbstractChannel, InOrder]:
        """Declare, then consume into `inbox`; the raw channel and the window its acks go through."""
        s = self.settings
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=s.prefetch)
        queue = await self._declare(channel)
        raw = await channel.get_underlay_channel()
        window = InOrder(partial(self._ack, raw))
        self._channel, self._window = raw, window
        inbox.messages.clear()
        ok = await raw.basic_consume(queue.name, inbox.on_message, no_ack=False)
        self._consumer_tag = ok.consumer_tag
        log.info("RabbitMQ connected: %s, queue %s bound to %s (prefetch %d)", mask_url(s.url), s.queue,
                 ", ".join(f"{e}:{k}" for e, k in s.bindings) if not s.passive else "(passive)", s.prefetch)
        self.connected_once = True
        return raw, window

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        backoff = Backoff()
        inbox = _Inbox(Intake(self._transports, self.settings.intake_ms / 1000))
        while not self._stopping.is_set():
            connection = await self._connect(backoff)
            if connection is None:
                if await backoff.sleep(self._stopping):
                    return
                continue
            self._connection = connection
            try:
                raw, window = await self._subscribe(connection, inbox)
                backoff.reset()
                closed = raw.closing
                closed.add_done_callback(inbox.wake)
                stopping = asyncio.ensure_future(self._stopping.wait())
                stopping.add_done_callback(inbox.wake)
                while True:
                    while inbox.messages:
                        message = inbox.messages.popleft()
                        # basic_consume hands over Basic.Deliver frames only, and each has its tag
                        d = cast(Basic.Deliver, message.delivery)
                        yield Delivery(message.body, d.exchange, d.routing_key, window.track(cast(int, d.delivery_tag)))
                    if self._stopping.is_set() or raw.is_closed:
                        break
                    await inbox.wait()
                stopping.cancel()
                if self._stopping.is_set():
                    return  # close() flushes the acks and closes the connection
                log.warning("RabbitMQ connection lost (%s); reconnecting", _close_reason(closed))
            except aiormq.exceptions.ChannelClosed as exc:
                if isinstance(exc, _REFUSALS):
                    await _close_quietly(connection)
                    raise self._refused(exc) from None
                log.warning("RabbitMQ channel closed (%s); reconnecting", _one_line(exc))
            except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
                log.warning("RabbitMQ connection lost (%s); reconnecting", _one_line(exc))
            await self._disconnected(connection)
            if await backoff.sleep(self._stopping):
                return

    async def _disconnected(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self._channel = self._window = None
        self._consumer_tag = None
        await _close_quietly(connection)
        self._connection = None
        metrics.RECONNECTS.labels("amqp").inc()

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


def _close_reason(closed: asyncio.Future) -> str:
    exc = closed.exception() if closed.done() and not closed.cancelled() else None
    return _one_line(exc) if exc is not None else "closed"


async def _close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), 5)
    except Exception:  # already closed or broken: the broker cleans up after us
        pass
