"""The relay loop: source delivery -> events.normalize -> Kafka -> settle (ack).

At least once: a delivery is settled only after Kafka acknowledged its record. Many records are in
flight at once (one produce round trip per message would cap the rate at 1/RTT); the number of
unsettled deliveries is bounded, so while Kafka is away the bridge stops taking deliveries instead
of buffering them. A record Kafka did not take is produced again with backoff, never requeued to
RabbitMQ; a body that cannot be decoded goes to the dead-letter topic with its reason.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnsupportedForMessageFormatError,
)
from prometheus_client import Counter

from pipeline import codec, events, redact, wire
from pipeline.backoff import Backoff

from . import metrics
from .routing import PRIORITY_RANK, REASON_CLASSES, catalog_topics, deadletter_topic, reason_class
from .sink import Headers, KafkaSink, SinkSettings, TopicRefused, _one_line
from .sources import Delivery, Source

# catalog_topics and REASON_CLASSES lived here before routing.py: the benchmark, the manifest tests and
# the metrics tests still import them from the relay
__all__ = ["REASON_CLASSES", "BridgeSettings", "Relay", "catalog_topics", "deadletter_topic", "reason_class"]

log = logging.getLogger("pipeline.bridge")

# Kafka will never take these records, however often we try: dead-letter them instead.
_NOT_RETRIABLE = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError,
                  UnsupportedForMessageFormatError)


def _retrieve(fut: asyncio.Future) -> BaseException | None:
    """A future's exception, marked as retrieved (a late failure of an abandoned producer is no
    news: asyncio would log each one as never retrieved)."""
    return None if fut.cancelled() else fut.exception()


def _log_crash(task: asyncio.Task) -> None:
    exc = None if task.cancelled() else task.exception()
    if exc is not None:
        log.error("relay task %s failed: %s", task.get_name(), _one_line(exc), exc_info=exc)


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """Everything a bridge needs; `command.settings_from_args` builds it from flags and env."""

    sink: SinkSettings
    topic_prefix: str = "notifications."
    value_format: str = "avro"
    avro_framing: str = "single-object"
    min_priority: str = "debug"
    max_in_flight: int = 1000  # AMQP: the prefetch, so RabbitMQ itself stops sending
    precreate_topics: bool = True
    shutdown_timeout_s: float = 10.0
    metrics_port: int = 0
    metrics_addr: str = "127.0.0.1"
    max_body_bytes: int = wire.MAX_BODY_BYTES
    extra_topics: tuple[str, ...] = field(default_factory=tuple)


@dataclass(slots=True)
class _Record:
    """A record handed to the producer and not yet confirmed."""

    d: Delivery
    topic: str
    value: bytes
    key: bytes | None
    headers: Headers
    dead: bool
    attempt: int
    seq: int
    generation: int
    started: float


class Relay:
    def __init__(self, settings: BridgeSettings, source: Source, sink: KafkaSink) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.deadletter_topic = deadletter_topic(settings.topic_prefix)
        self.min_rank = PRIORITY_RANK[settings.min_priority]
        self.values = codec.Encoder(settings.value_format, settings.avro_framing)
        self.in_flight = 0
        self._space: asyncio.Future | None = None  # resolved when in_flight drops below the bound
        self._idle: asyncio.Future | None = None  # resolved when in_flight reaches 0
        self._retries: set[asyncio.Task] = set()
        # Kafka's acknowledgement future -> what to settle or produce again; a future no longer here
        # belongs to an abandoned producer and its late outcome is ignored
        self._pending: dict[asyncio.Future, _Record] = {}
        self._seq = 0  # order in which records were first handed to a producer
        self._gate: asyncio.Future | None = None  # closed (not None) while a recovery runs (_recover)
        self._recovery: asyncio.Task | None = None
        self._replay: list[_Record] = []  # records failed or dropped, to produce again in order
        self._relayed: dict[str, Counter] = {}  # topic -> counter child, resolved once
        self.relayed = 0
        self.deadlettered = 0
        self.filtered = 0
        self.last_ack = time.perf_counter()
        self.stopping = False
        # set once stopping has waited `shutdown_timeout_s`: records Kafka has not taken by then are
        # left unacked for the source to deliver again, instead of being retried
        self._give_up = asyncio.Event()

    # -- per delivery -------------------------------------------------------------------------

    async def handle(self, d: Delivery) -> None:
        self.in_flight += 1
        reason = d.reason
        if reason is None:
            try:
                event = events.normalize(d.body, topic_prefix=self.settings.topic_prefix,
                                         max_bytes=self.settings.max_body_bytes)
            except wire.Rejected as exc:
                reason = exc.reason
            else:
                priority = event["priority"]
                if PRIORITY_RANK.get(priority, 20) < self.min_rank:
                    self.filtered += 1
                    metrics.FILTERED.labels(priority).inc()
                    self._settled(d)
                    return
                topic = event["topic"]
                if topic not in self.sink.topics:
                    try:
                        if not await self._ensure_topic(topic):
                            self._released()  # stopping first: not acked, so it is redelivered
                            return
                    except TopicRefused as exc:
                        await self._deadletter(d, f"relay topic {topic} cannot be created: {exc}")
                        return
                try:
                    value, content_type = self.values.event(event, topic)
                except Exception as exc:  # a value the schema cannot hold must not end the bridge
                    await self._deadletter(d, f"cannot encode the event: {_one_line(exc)}")
                    return
                headers = (
                    ("event_type", event["event_type"].encode()),
                    ("message_id", event["message_id"].encode()),
                    ("priority", priority.encode()),
                    ("content-type", content_type),
                )
                await self._produce(d, topic, value, events.relay_key(event), headers, False)
                return
        await self._deadletter(d, reason)

    async def _ensure_topic(self, topic: str) -> bool:
        """Create a family's topic on first sight; while Kafka cannot, wait here (which stops the
        intake, like any Kafka trouble). False when the bridge stops first."""
        backoff = Backoff(jitter=0)
        while True:
            try:
                await self.sink.ensure_topics([topic])
                return True
            except TopicRefused:
                raise
            except Exception as exc:  # KafkaError, connection errors
                log.warning("cannot create topic %s (%s); retrying in %.1fs", topic, _one_line(exc), backoff.delay)
            if self.stopping:
                return False
            await backoff.sleep()

    async def _deadletter(self, d: Delivery, reason: str) -> None:
        headers: tuple[tuple[str, bytes], ...] = (
            ("reason", reason.encode()),
            ("exchange", (d.exchange or "").encode()),
            ("routing_key", (d.routing_key or "").encode()),
        )
        body = redact.mask_body(d.body)  # credentials never leave the bridge, not even rejected ones
        limit = self.settings.sink.max_request_bytes - 4096
        if len(body) > limit:  # the dead letter itself must fit into a Kafka request
            headers += (("truncated_from", str(len(body)).encode()),)
            body = body[:limit]
        await self._produce(d, self.deadletter_topic, body, None, headers, True)

    async def _produce(self, d: Delivery, topic: str, value: bytes, key: bytes | None,
                       headers: Headers, dead: bool, attempt: int = 0) -> None:
        while self._gate is not None:  # a recovery is producing older records again first
            giving_up = asyncio.ensure_future(self._give_up.wait())
            await asyncio.wait((self._gate, giving_up), return_when=asyncio.FIRST_COMPLETED)
            giving_up.cancel()
            await asyncio.wait((giving_up,))  # let it unwind before it is dropped
            if self._give_up.is_set():
                self._released()  # not acked: the source delivers it again
                return
        self._seq += 1
        seq = self._seq
        backoff = Backoff(initial=0.25)
        while True:
            started = time.perf_counter()
            generation = self.sink.generation
            try:
                fut = await self.sink.send(topic, value, key, headers)
                break
            except _NOT_RETRIABLE as exc:
                await self._rejected_by_kafka(d, dead, exc)
                return
            except Exception as exc:  # KafkaTimeoutError while Kafka is away, a producer being renewed
                # Kafka did not take the record: try again right here, so the deliveries behind it
                # wait (intake stops) and records of one key keep their order
                self._count_retry(topic, attempt, exc)
                if await backoff.sleep(self._give_up):
                    self._released()  # not acked: the source delivers it again
                    return
                attempt += 1
        self._track(fut, _Record(d, topic, value, key, headers, dead, attempt, seq, generation, started))

    def _track(self, fut: asyncio.Future, record: _Record) -> None:
        if record.generation <= self.sink.abandoned:  # the producer was dropped while it took it
            fut.add_done_callback(_retrieve)
            self._recover(record, None)
            return
        self._pending[fut] = record
        fut.add_done_callback(self._acked)

    def _acked(self, fut: asyncio.Future) -> None:
        record = self._pending.pop(fut, None)
        exc = _retrieve(fut)
        if record is None:
            return  # a record of an abandoned producer, already produced again
        if fut.cancelled() or exc is not None:
            if isinstance(exc, _NOT_RETRIABLE):
                self._spawn(self._rejected_by_kafka(record.d, record.dead, exc))
            else:
                self._recover(record, exc)
            return
        now = self.last_ack = time.perf_counter()
        metrics.PRODUCE_LATENCY.observe(now - record.started)
        if record.dead:
            self.deadlettered += 1
            metrics.DEADLETTERED.labels(reason_class(record.headers[0][1].decode())).inc()
        else:
            self.relayed += 1
            counter = self._relayed.get(record.topic)
            if counter is None:
                counter = self._relayed[record.topic] = metrics.RELAYED.labels(record.topic)
            counter.inc()
        self._settled(record.d)

    def _recover(self, record: _Record, exc: BaseException | None) -> None:
        """Kafka failed a record it had taken (after a broker restart: OutOfOrderSequenceNumber,
        LeaderNotAvailable, ...). Producing that record again alone would put it behind newer
        records of its key, and the agents pair a start with its end by arrival. So the producer
        is abandoned at once (its next batches would overtake this one), intake waits at the gate,
        and a new producer takes every record the old one had not confirmed, in their first order.
        What the old one still delivers is a duplicate the agents drop, never a loss."""
        self._count_retry(record.topic, record.attempt, exc)
        self._replay.append(record)
        if record.generation == self.sink.generation:
            self.sink.abandon()
        if self._recovery is None:
            if self._gate is None:
                self._gate = asyncio.get_running_loop().create_future()
            self._recovery = self._spawn(self._recovery_loop(exc))

    async def _recovery_loop(self, cause: BaseException | None) -> None:
        backoff = Backoff(initial=0.25)
        try:
            while True:
                if self.sink.producer is None and not await self.sink.renew(cause, self._give_up):
                    for _ in self._replay + [self._pending.pop(f) for f in list(self._pending)]:
                        self._released()  # stopped while Kafka is away: delivered again later
                    self._replay = []
                    return
                await asyncio.sleep(0)  # failures the abandoned producer reports now join in
                generation = self.sink.generation
                stale = [f for f, r in self._pending.items() if r.generation < generation]
                records = self._replay + [self._pending.pop(f) for f in stale]
                self._replay = []
                if not records:
                    return
                for r in sorted(records, key=lambda r: r.seq):
                    if self.sink.producer is None:  # abandoned again: next round
                        self._replay.append(r)
                        continue
                    r.attempt += 1
                    r.started, r.generation = time.perf_counter(), generation
                    try:
                        fut = await self.sink.send(r.topic, r.value, r.key, r.headers)
                    except _NOT_RETRIABLE as exc:
                        self._spawn(self._rejected_by_kafka(r.d, r.dead, exc))
                        continue
                    except Exception as exc:  # noqa: BLE001 - Kafka away again: a fresh producer
                        self._count_retry(r.topic, r.attempt, exc)
                        self._replay.append(r)
                        self.sink.abandon()
                        continue
                    self._track(fut, r)
                if self._replay and await backoff.sleep(self._give_up):
                    for _r in self._replay:
                        self._released()  # not acked: the source delivers them again
                    self._replay = []
                    return
        finally:
            self._recovery = None
            gate, self._gate = self._gate, None
            if gate is not None and not gate.done():
                gate.set_result(None)

    async def _rejected_by_kafka(self, d: Delivery, dead: bool, exc: BaseException) -> None:
        reason = f"kafka rejected the record: {_one_line(exc)}"
        if dead:  # even the (truncated) dead letter does not fit: say so loudly and move on
            log.error("dead letter dropped, Kafka does not take it: %s", reason)
            self._settled(d)
            return
        await self._deadletter(d, reason)

    @staticmethod
    def _count_retry(topic: str, attempt: int, exc: BaseException | None) -> None:
        if attempt == 0 or attempt % 10 == 0:
            log.warning("produce to %s failed (%s); retrying", topic,
                        _one_line(exc) if exc else "cancelled")
        metrics.PRODUCE_RETRIES.inc()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)
        task.add_done_callback(_log_crash)
        return task

    def _settled(self, d: Delivery) -> None:
        d.settle()
        self._released()

    def _released(self) -> None:
        self.in_flight -= 1
        if self._space is not None and self.in_flight < self.settings.max_in_flight and not self._space.done():
            self._space.set_result(None)
        if self.in_flight == 0 and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def watch_kafka(self, stall_s: float = 5.0) -> None:
        """One log line when Kafka stops acknowledging while records wait, one when it resumes.
        (aiokafka retries quietly inside its request timeout, so a short outage raises nothing.)"""
        stalled_since = None
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            if stalled_since is None:
                if self.in_flight and now - self.last_ack > stall_s:
                    stalled_since = self.last_ack
                    log.warning("Kafka has acknowledged nothing for %.0fs; %d deliveries wait (%d records "
                                "with the producer%s), no new ones are taken", now - self.last_ack,
                                self.in_flight, len(self._pending),
                                f", {len(self._replay)} to produce again" if self._gate is not None else "")
            elif self.last_ack > stalled_since:
                log.info("Kafka acknowledging again after %.0fs", self.last_ack - stalled_since)
                stalled_since = None

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until the source ends or `stop` is set; then wait (bounded) for what is in flight."""
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(stop.wait())
        watcher.add_done_callback(lambda _: self._stop())
        kafka_watch = loop.create_task(self.watch_kafka())
        bound = self.settings.max_in_flight
        try:
            async for d in self.source:
                await self.handle(d)
                if self.in_flight >= bound:
                    self._space = loop.create_future()
                    await self._space
                    self._space = None
                if stop.is_set():
                    break
        finally:
            watcher.cancel()
            await self.drain(self.settings.shutdown_timeout_s)
            kafka_watch.cancel()

    def _stop(self) -> None:
        self.stopping = True
        asyncio.get_running_loop().call_later(self.settings.shutdown_timeout_s, self._give_up.set)
        self.source.stop()

    async def drain(self, timeout: float) -> bool:
        """Wait until every delivery is settled; False when `timeout` passed first."""
        if self.in_flight == 0:
            return True
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._idle), timeout)
            return True
        except TimeoutError:
            log.warning("%d deliveries still unsettled after %.0fs; they will be delivered again",
                        self.in_flight, timeout)
            self._give_up.set()
            return False
        finally:
            self._idle = None
