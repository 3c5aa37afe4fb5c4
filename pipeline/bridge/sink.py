"""The Kafka side: an idempotent aiokafka producer (acks=all) and the topics it writes to.

Records are partitioned exactly as the Java client's default partitioner does for a keyed record,
``toPositive(murmur2(key)) % numPartitions``, so Kafka Streams and other downstream apps that
co-partition by the same key agree with us.

Records are produced in rounds (`_Rounds`): what arrives while one round is with Kafka goes out
together as the next, one closed batch per partition. aiokafka alone sends a batch as soon as its
own linger expires, so with a few dozen partitions it made about one request per six records, and
those requests cost the broker as much CPU as the bridge spent on its own work.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.errors import KafkaConnectionError, KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from pipeline.backoff import Backoff
from pipeline.config import ConfigError

from . import metrics

log = logging.getLogger("pipeline.bridge")

TOPIC_ALREADY_EXISTS = 36
# CreateTopics errors that trying again will not fix: invalid topic, authorization (topic, cluster),
# invalid partitions / replication factor / replica assignment / config, policy violation
REFUSED_CODES = frozenset({17, 29, 31, 37, 38, 39, 40, 44})


class TopicRefused(KafkaError):
    """Kafka will not create this topic (ACLs, policy, settings); one-line reason in str()."""


COMPRESSIONS = {"none": lambda: True, "gzip": has_gzip, "lz4": has_lz4, "zstd": has_zstd, "snappy": has_snappy}

Headers = Sequence[tuple[str, bytes]]


@lru_cache(maxsize=65536)  # keys repeat (a node's events share its UUID): hash each once
def java_partition(key: bytes, num_partitions: int) -> int:
    """The Java client's default partition for a non-null key (Utils.toPositive(Utils.murmur2(key)))."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


def partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka partitioner hook. Partition ids of a topic are always 0..n-1, so the index is the id."""
    if key is None:
        return random.choice(available or all_partitions)
    return java_partition(key, len(all_partitions))


@dataclass(frozen=True, slots=True)
class SinkSettings:
    bootstrap_servers: list[str]
    topic_partitions: int = 6
    replication_factor: int = 1
    compression: str = "none"
    linger_ms: int = 10  # how long the first record of a round waits for others (see _Rounds)
    max_batch_bytes: int = 512 * 1024
    max_request_bytes: int = 1024 * 1024
    request_timeout_ms: int = 30000
    client_id: str = "pipeline-bridge"
    security: dict = field(default_factory=dict)  # TLS/SASL arguments of config.kafka_client_kwargs


def check_compression(name: str) -> str | None:
    """The aiokafka compression_type for a setting; ConfigError when its library is missing."""
    if name not in COMPRESSIONS:
        raise ConfigError(f"--kafka-compression {name!r}: one of {', '.join(COMPRESSIONS)}")
    if not COMPRESSIONS[name]():
        raise ConfigError(
            f"--kafka-compression {name}: aiokafka needs the 'cramjam' package for it; use gzip or none"
        )
    return None if name == "none" else name


class KafkaSink:
    """Producer plus topic bookkeeping. `send` hands a record to the producer and returns the
    future Kafka's acknowledgement resolves, so callers can keep many records in flight."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.topics: set[str] = set()  # known to exist
        self._creating: dict[str, asyncio.Future] = {}
        self.generation = 0  # bumped by each renewal of the producer
        self.abandoned = -1  # the generation last abandoned
        self._dropped: asyncio.Future | None = None  # per producer: resolved by abandon()
        self._rounds: _Rounds | None = None  # per producer: the records it is given
        self._closing: set[asyncio.Task] = set()  # abandoned producers' clients closing

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Connect, retrying with backoff until Kafka answers; False when `stop` was set first."""
        s = self.settings
        backoff = Backoff()
        while True:
            producer = self._new_producer()
            admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers, client_id=s.client_id, **s.security)
            try:
                await producer.start()
                await admin.start()
                self.topics = set(await admin.list_topics())
            except (KafkaError, OSError) as exc:
                await _quiet_stop(producer)
                await _quiet_stop(admin)
                if await self._wait_to_retry(exc, backoff, stop):
                    return False
                continue
            self.producer, self.admin = producer, admin
            self._dropped = asyncio.get_running_loop().create_future()  # resolved by abandon()
            self._rounds = _Rounds(producer, s, self._dropped)
            log.info("Kafka connected: %s (acks=all, idempotent, compression=%s)",
                     ",".join(s.bootstrap_servers), s.compression)
            return True

    def _new_producer(self) -> AIOKafkaProducer:
        s = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,  # batches come closed from _Rounds, which does the lingering
            compression_type=check_compression(s.compression),
            max_batch_size=s.max_batch_bytes,
            max_request_size=s.max_request_bytes,
            request_timeout_ms=s.request_timeout_ms,
            partitioner=partitioner,
            **s.security,
        )

    async def _wait_to_retry(self, exc: BaseException, backoff: Backoff, stop: asyncio.Event | None) -> bool:
        """Say so and wait; True when `stop` was set first."""
        log.warning("Kafka %s unreachable (%s); retrying in %.1fs",
                    ",".join(self.settings.bootstrap_servers), _one_line(exc), backoff.delay)
        metrics.RECONNECTS.labels("kafka").inc()
        return await backoff.sleep(stop)

    def abandon(self) -> None:
        """Stop the producer sending anything more, at once (see Relay._recover): aiokafka has no
        abort, so its sender task is cancelled; what it holds is never sent, and the caller
        produces it again on the producer `renew` makes."""
        old, self.producer = self.producer, None
        if old is None:
            return
        self.abandoned = self.generation
        self._rounds = None  # what it holds is never handed over: the relay produces it again
        if self._dropped is not None and not self._dropped.done():
            self._dropped.set_result(None)
        sender = getattr(getattr(old, "_sender", None), "sender_task", None)
        if sender is not None:
            sender.cancel()
        # only its connections are closed: stop() would wait to flush what must not be sent now
        task = asyncio.get_running_loop().create_task(_close_client(old))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def renew(self, cause: BaseException | None, stop: asyncio.Event | None = None) -> bool:
        """A new producer (a new producer id, so no sequence state) after `abandon`; retried with
        backoff while Kafka does not answer (`producer` stays None meanwhile: senders wait).
        False when `stop` was set first."""
        log.warning("renewing the Kafka producer after %s", _one_line(cause) if cause else "a failed send")
        metrics.PRODUCER_RENEWALS.inc()
        backoff = Backoff()
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                break
            except (KafkaError, OSError) as exc:
                await _quiet_stop(producer)
                if await self._wait_to_retry(exc, backoff, stop):
                    return False
        self.generation += 1
        self.producer, self._dropped = producer, asyncio.get_running_loop().create_future()
        self._rounds = _Rounds(producer, self.settings, self._dropped)
        return True

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet (concurrent callers share one request)."""
        missing = [t for t in dict.fromkeys(topics) if t not in self.topics]
        if not missing:
            return
        waiting = [self._creating[t] for t in missing if t in self._creating]
        new = [t for t in missing if t not in self._creating]
        if new:
            fut = asyncio.get_running_loop().create_future()
            for t in new:
                self._creating[t] = fut
            try:
                await self._create(new)
                fut.set_result(None)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it themselves
                raise
            finally:
                for t in new:
                    self._creating.pop(t, None)
        for fut in waiting:
            await fut

    async def _create(self, topics: list[str]) -> None:
        assert self.admin is not None
        s = self.settings
        response = await self.admin.create_topics(
            [NewTopic(t, s.topic_partitions, s.replication_factor) for t in topics]
        )
        failed, refused = [], []
        for entry in response.topic_errors:
            topic, code = entry[0], entry[1]
            if code in REFUSED_CODES:
                refused.append(f"{topic}: error {code} {entry[2] if len(entry) > 2 and entry[2] else ''}".strip())
                continue
            if code == 0:
                metrics.TOPICS_CREATED.inc()
                log.info("topic created: %s (%d partitions, replication %d)",
                         topic, s.topic_partitions, s.replication_factor)
            elif code != TOPIC_ALREADY_EXISTS:
                failed.append(f"{topic}: error {code} {entry[2] if len(entry) > 2 else ''}".strip())
                continue
            self.topics.add(topic)
        if refused:
            raise TopicRefused("Kafka refuses to create " + "; ".join(refused))
        if failed:
            raise KafkaError("cannot create topics: " + "; ".join(failed))

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> asyncio.Future:
        """Add to the next round; the returned future resolves on Kafka's ack of the record."""
        producer, rounds = self.producer, self._rounds
        if producer is None or rounds is None:
            raise KafkaConnectionError("the producer is being renewed")
        if topic not in rounds.known:
            await self._wait_for_metadata(producer, topic)
            rounds.known.add(topic)
        return rounds.add(topic, value, key, headers)

    async def _wait_for_metadata(self, producer: AIOKafkaProducer, topic: str) -> None:
        # aiokafka waits without a bound once the producer's client is closed, so a producer
        # abandoned meanwhile must not hold the caller
        waiting = asyncio.ensure_future(producer.partitions_for(topic))
        assert self._dropped is not None  # set with the producer
        await asyncio.wait((waiting, self._dropped), return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            await asyncio.wait((waiting,))  # let it unwind before it is dropped
            raise KafkaConnectionError("the producer was abandoned")
        waiting.result()

    async def flush(self, timeout: float) -> None:
        """Hand over what the rounds hold, so that stop() finds it with the producer."""
        if self._rounds is not None:
            await self._rounds.flush(timeout)

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush what the producer holds (bounded in time) and disconnect."""
        await self.flush(timeout)
        if self.producer is not None:
            await _stop_within(self.producer.stop(), timeout)
        if self.admin is not None:
            await _stop_within(self.admin.close(), timeout)
        self.producer = self.admin = None


class _Rounds:
    """One producer's records, produced in rounds: a round is every record added since the last
    one was handed over, one closed batch per partition in arrival order, handed to aiokafka at
    once (so it goes out in one request per broker), and the next round starts only when Kafka has
    answered for all of it. A quiet bridge so sends a record within `linger_ms`; a busy one sends
    as much per request as arrived during the previous round trip.

    Per-key order holds: a key's records are in one partition, in one batch per round, and rounds
    follow each other. A record's future gets its batch's outcome; a round whose producer is
    abandoned is never finished and its records are produced again by the relay."""

    __slots__ = ("producer", "settings", "dropped", "known", "waiting", "running", "scheduled", "idle", "loop")

    def __init__(self, producer: AIOKafkaProducer, settings: SinkSettings, dropped: asyncio.Future) -> None:
        self.producer = producer
        self.settings = settings
        self.dropped = dropped
        self.known: set[str] = set()  # topics whose metadata the producer has
        # topic -> [(key, value, headers, future)] in arrival order, for the next round
        self.waiting: dict[str, list] = {}
        self.running = False  # a round is with Kafka
        self.scheduled = False
        self.idle: asyncio.Future | None = None  # resolved when nothing waits and no round runs
        self.loop = asyncio.get_running_loop()

    def add(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> asyncio.Future:
        headers = list(headers)  # aiokafka's C record builder takes lists only
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.settings.max_request_bytes:  # what producer.send says for such a record
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the maximum "
                "request size you have configured with the max_request_size configuration")
        fut = self.loop.create_future()
        records = self.waiting.get(topic)
        if records is None:
            records = self.waiting[topic] = []
        records.append((key, value, headers, fut))
        if not self.running and not self.scheduled:
            self.scheduled = True
            self.loop.call_later(self.settings.linger_ms / 1000, self._start)
        return fut

    def _start(self) -> None:
        self.scheduled = False
        if self.running or self.dropped.done():
            return
        if not self.waiting:
            self._went_idle()
            return
        self.running = True
        waiting, self.waiting = self.waiting, {}
        task = self.loop.create_task(self._round(waiting))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self.running = False
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("produce round failed: %s", _one_line(exc), exc_info=exc)
        if self.dropped.done():
            return
        if self.waiting:
            self._start()  # what arrived meanwhile: at once, it has waited a round trip already
        else:
            self._went_idle()

    def _went_idle(self) -> None:
        if self.idle is not None and not self.idle.done():
            self.idle.set_result(None)

    async def _round(self, waiting: dict[str, list]) -> None:
        producer, cluster = self.producer, self.producer.client.cluster
        sent: list[tuple[asyncio.Future, list]] = []
        for topic, records in waiting.items():
            partitions = cluster.partitions_for_topic(topic)
            count = len(partitions) if partitions else 1
            by_partition: dict[int, list] = {}
            for record in records:
                key = record[0]
                p = java_partition(key, count) if key is not None else partitioner(None, list(partitions or [0]), [])
                by_partition.setdefault(p, []).append(record)
            for p, group in by_partition.items():
                while group:
                    batch = producer.create_batch()
                    taken = 0
                    for key, value, headers, _ in group:  # a batch always takes its first record
                        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                            break
                        taken += 1
                    batch.close()  # closed: aiokafka sends it at once, and nothing else joins it
                    mine, group = group[:taken], group[taken:]
                    try:
                        fut = await producer.send_batch(batch, topic, partition=p)
                    except Exception as exc:  # noqa: BLE001 - Kafka did not take it: each record says so
                        _fail(mine, exc)
                        continue
                    sent.append((fut, mine))
        if not sent:
            return
        done = asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        await asyncio.wait((done, self.dropped), return_when=asyncio.FIRST_COMPLETED)
        if self.dropped.done():
            return  # abandoned: the relay produces these records again, late outcomes are no news
        for (_fut, records), outcome in zip(sent, done.result()):
            if isinstance(outcome, BaseException):
                _fail(records, outcome)
            else:
                for record in records:
                    if not record[3].done():
                        record[3].set_result(outcome)

    async def flush(self, timeout: float) -> None:
        if not self.waiting and not self.running:
            return
        self.idle = self.loop.create_future()
        if not self.running and not self.scheduled:
            self._start()
        try:
            await asyncio.wait_for(asyncio.shield(self.idle), timeout)
        except TimeoutError:
            log.warning("records still with the producer after %.0fs", timeout)


def _fail(records: list, exc: BaseException) -> None:
    for record in records:
        if not record[3].done():
            record[3].set_exception(exc)


async def _stop_within(stopping: Coroutine[Any, Any, None], timeout: float) -> None:
    try:
        await asyncio.wait_for(stopping, timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("Kafka client did not stop cleanly: %s", _one_line(exc))


async def _close_client(producer: AIOKafkaProducer) -> None:
    producer._closed = True  # what stop() would mark; aiokafka logs "Unclosed" for any other
    try:
        await asyncio.wait_for(producer.client.close(), 10.0)
    except Exception as exc:  # an abandoned producer: nothing left to save in it
        log.info("abandoned Kafka producer closed uncleanly: %s", _one_line(exc))


async def _quiet_stop(client) -> None:
    try:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
    except Exception:  # already broken; the caller reports the original error
        pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"
