"""The bridge's heartbeats: the source vouches for time on partitions that get no events.

The agents' deadlines follow event time per relay partition, so on a partition that receives no
later event a lost end would wait forever; a clock driven by the consumer's wall clock would instead
fire every deadline during an outage upstream of Kafka. The bridge knows what the consumer cannot:
whether it has relayed everything it was handed. Every `interval_s` it checks that nothing it took is
unconfirmed (the relay's unsettled deliveries) and that its queue has no ready message (a passive
queue.declare); then it writes a heartbeat into every partition of every relay topic, its clock in
the record's `timestamp`. Written only once every earlier record was acknowledged (acks=all), each
heartbeat lands after them in its partition: it says "nothing older is still coming through me".

Kafka unreachable, the bridge stopped, or a backlog in RabbitMQ: no heartbeat carries a newer time,
so the workers' clocks hold, and no deadline fires for an end that is merely waiting upstream. While
it is not caught up, a bridge that can still reach Kafka repeats its last vouched time with a new
`sent_at` (alive, holding the clock), so a second replica's heartbeats cannot move the lanes past it.
A bridge that has never been caught up since it started writes nothing: it has nothing to vouch for.

The record kind is documented in docs/contracts.md (Heartbeats); `events.heartbeat_event` builds it.
Sources other than AMQP cannot tell when they are caught up, so with them no heartbeat is written.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aiokafka import AIOKafkaProducer

from pipeline import codec, events

from . import metrics
from .sink import SinkSettings, _one_line
from .sources import AmqpSettings

__all__ = ["Heartbeat", "HeartbeatSettings", "QueueDepth", "default_bridge_id"]

log = logging.getLogger("pipeline.bridge")


def default_bridge_id() -> str:
    """Unique per running bridge: the host name (a pod's name in Kubernetes) and the process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class HeartbeatSettings:
    interval_s: float = 5.0  # 0: no heartbeats
    bridge_id: str = ""


class QueueDepth:
    """Ready messages in the bridge's AMQP queue (passive queue.declare), on a connection of its own
    so that a slow relay never delays the answer; None while RabbitMQ does not answer."""

    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def __call__(self) -> int | None:
        s = self.settings
        try:
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect(
                    s.url, ssl_context=s.ssl_context, timeout=5,
                    client_properties={"connection_name": "pipeline-bridge-heartbeat"})
                self._channel = None
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel(publisher_confirms=False)
            queue = await asyncio.wait_for(self._channel.declare_queue(s.queue, passive=True), 5)
            return queue.declaration_result.message_count or 0
        except Exception as exc:  # noqa: BLE001 - unknown depth: not caught up, nothing to vouch
            log.debug("queue depth unknown: %s", _one_line(exc))
            await self.close()
            return None

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception:  # noqa: BLE001 - already broken
                pass


class Heartbeat:
    """Writes the heartbeats of one bridge. `unconfirmed` is the relay's count of deliveries taken and
    not yet settled; `backlog` what waits at the source (None: unknown); `topics` the relay topics
    that exist."""

    def __init__(self, settings: HeartbeatSettings, sink: SinkSettings, *, values: codec.Encoder,
                 topics: Callable[[], Iterable[str]], unconfirmed: Callable[[], int],
                 backlog: Callable[[], Awaitable[int | None]]) -> None:
        self.settings = settings
        self.sink = sink
        self.values = values  # the relay's: a heartbeat is framed like the notifications beside it
        self.topics = topics
        self.unconfirmed = unconfirmed
        self.backlog = backlog
        self.vouched: datetime | None = None  # the last time this bridge was caught up
        self.caught_up = False
        self._partitions: dict[str, list[int]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._inflight: list[asyncio.Future] = []  # the previous beat's records, not yet acknowledged
        self._failing = False

    async def check(self) -> bool:
        """Caught up: nothing unconfirmed before and after the queue reports no ready message.
        The vouched time is taken before the question, so it is never later than the answer."""
        now = datetime.now(UTC)
        if self.unconfirmed():
            return False
        if await self.backlog() != 0 or self.unconfirmed():
            return False
        self.vouched = now
        return True

    def records(self, sent_at: datetime) -> list[tuple[str, int, bytes, list]]:
        """(topic, partition, value, headers) of one heartbeat in every known partition."""
        assert self.vouched is not None
        out = []
        for topic, partitions in self._partitions.items():
            for partition in partitions:
                event = events.heartbeat_event(
                    bridge=self.settings.bridge_id, topic=topic, partition=partition, vouched=self.vouched,
                    sent_at=sent_at, interval_s=self.settings.interval_s, caught_up=self.caught_up,
                    message_id=str(uuid.uuid4()))
                value, content_type = self.values.event(event, topic)
                headers = [("kind", events.HEARTBEAT_KIND), ("event_type", events.HEARTBEAT_EVENT_TYPE.encode()),
                           ("message_id", event["message_id"].encode()), ("priority", b"debug"),
                           ("content-type", content_type)]
                out.append((topic, partition, value, headers))
        return out

    async def _start_producer(self) -> AIOKafkaProducer:
        s = self.sink
        timeout_ms = int(max(self.settings.interval_s * 3, 10) * 1000)
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, client_id=f"{s.client_id}-heartbeat",
                                    acks="all", linger_ms=5, request_timeout_ms=timeout_ms, **s.security)
        try:
            await producer.start()
        except BaseException:
            await _quiet_stop(producer)
            raise
        return producer

    async def beat(self) -> int:
        """One heartbeat round; the number of records written (0 when there was nothing to vouch)."""
        if any(not f.done() for f in self._inflight):
            return 0  # Kafka has not acknowledged the previous round: no pile-up while it is away
        self.caught_up = await self.check()
        if self.vouched is None:
            return 0
        if self._producer is None:
            self._producer = await self._start_producer()
        producer = self._producer
        for topic in self.topics():
            if topic not in self._partitions:
                self._partitions[topic] = sorted(await asyncio.wait_for(producer.partitions_for(topic), 10))
            else:  # metadata refreshes on its own (metadata_max_age_ms): partitions may grow
                self._partitions[topic] = sorted(producer.client.cluster.partitions_for_topic(topic)
                                                 or self._partitions[topic])
        sent_at = datetime.now(UTC)
        futures = []
        for topic, partition, value, headers in self.records(sent_at):
            futures.append(await producer.send(topic, value, partition=partition, headers=headers))
        self._inflight = futures
        done, _ = await asyncio.wait(futures, timeout=max(self.settings.interval_s, 1.0))
        failed = [f for f in done if f.cancelled() or f.exception() is not None]
        written = len(done) - len(failed)
        metrics.HEARTBEATS.labels("true" if self.caught_up else "false").inc(written)
        if self.caught_up:
            metrics.HEARTBEAT_VOUCHED.set(self.vouched.timestamp())
        if failed or len(done) < len(futures):
            if not self._failing:
                reason = (_one_line(failed[0].exception()) if failed and not failed[0].cancelled()
                          else "no acknowledgement in time")
                log.warning("heartbeats not written (%s); the workers' clocks hold meanwhile", reason)
            self._failing = True
        elif self._failing:
            log.info("heartbeats written again")
            self._failing = False
        return written

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.interval_s
        log.info("heartbeats every %.1fs as %s", interval, self.settings.bridge_id)
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    # aiokafka waits for metadata without a bound while Kafka is away
                    await asyncio.wait_for(self.beat(), max(interval * 3, 10))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Kafka away: the clocks hold, try again later
                    if not self._failing:
                        log.warning("heartbeats not written (%s); the workers' clocks hold meanwhile", _one_line(exc))
                    self._failing = True
                    producer, self._producer = self._producer, None
                    if producer is not None:
                        await _quiet_stop(producer)
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - started)))
                except TimeoutError:
                    pass
        finally:
            if self._producer is not None:
                await _quiet_stop(self._producer)
                self._producer = None
            close = getattr(self.backlog, "close", None)
            if close is not None:
                await close()


async def _quiet_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception:  # noqa: BLE001 - shutting down a producer that may never have connected
        # not BaseException: a cancellation swallowed here kept the heartbeat loop (and the
        # process, which waits for it) running after the bridge had stopped
        pass
