"""The agent: one stream over every relay topic, concurrency 1, the pure state machine inside.

The body (`processor.Processor`) works on batches (what the stream has buffered, acked after the
batch); here is the faust wiring around it: the agent's batches, the table writers and the
producer. A batch's outputs go to the producer in order, then its table writes as one group of
changelog records.

What a crash can and cannot do (at-least-once input, faust commits every 2.8 s):

* a batch's records are acked only after the body has handed its outputs to the producer and its
  changelog records to `ChangelogQueue`; a commit drains that queue first, so a committed offset
  means the outputs and the state of every record before it are in Kafka;
* outputs go to the partition number of their event (output topics have the relay topics'
  partition count) with a header ``id`` = the output's deterministic id;
* a batch's changelog records are produced only after every output of the batch is acknowledged
  (`ChangelogQueue`): in Kafka, state is never ahead of outputs;
* after an assignment, before any record flows, the tail of each output partition is re-read
  (`replay_guard_s` before its newest record): the ids found there are not published again, so a
  batch replayed because its state did not make it before the crash does not duplicate the outputs
  it already published (the ids are deterministic: the same state and records give the same ids);
* RocksDB tables left by an unclean stop are rebuilt from the changelog (command.py), since their
  local writes may be ahead of what reached Kafka.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from time import monotonic
from typing import Any

from . import faust_patches, liveness
from .processor import DictStore, Processor

__all__ = ["DictStore", "Processor", "install", "send_batches"]

log = logging.getLogger("pipeline.worker")


class TableWriter:
    """A faust table written by partition, its changelog records collected for the producer.

    The store is written as `Table.__setitem__` would (faust_patches.PartitionStore); the
    changelog record is the one faust would send (same topic, key, value, partition) and is
    released by `ChangelogQueue` once the batch's outputs are acknowledged, with the RocksDB offset
    bookkeeping of `Table._on_changelog_sent` on delivery.
    """

    def __init__(self, table: Any) -> None:
        self.store = faust_patches.PartitionStore(table)
        self.topic = table.changelog_topic.get_topic_name()
        self.changelog: list[tuple[str, bytes, bytes, int, Callable[[Any], None]]] = []

    def get_in(self, partition: int, key: bytes) -> bytes | None:
        return self.store.get(partition, key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.store.put(partition, key, value)
        self.changelog.append((self.topic, key, value, partition, self.store.on_changelog_sent))

    def items(self) -> Any:
        return self.store.items()


class ChangelogQueue:
    """Groups of table changelog records, released to the producer in order, each group once the
    outputs of its batch are acknowledged.

    A changelog record reaching Kafka before the outputs of the same event would, after a crash,
    leave a state that says "done" for outputs that were never published: the replayed event is a
    duplicate, its outputs are lost. Outputs and changelog go to different partitions, so the
    producer alone does not order them. Holding each batch's changelog records until its outputs
    are acknowledged makes the changelog never ahead of the outputs; faust's commit waits for this
    queue (faust_patches.flush_first), so a committed offset still means "state and outputs are in
    Kafka".
    """

    def __init__(self, app: Any, on_delivery: Callable[[Any], None]) -> None:
        self.app = app
        self.on_delivery = on_delivery
        self.queue: collections.deque = collections.deque()
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.released = 0  # groups handed to the producer so far

        async def drain_queued() -> None:
            # the offsets being committed were taken before this call: the groups queued now are
            # theirs (and maybe a few more); later ones belong to a later commit
            await self.drain(len(self.queue))

        faust_patches.flush_first(app.producer, drain_queued)

    def put(self, outputs: list, records: list) -> None:
        self.queue.append((outputs, records))

    def kick(self) -> None:
        if self.queue and (self.task is None or self.task.done()):
            self.task = asyncio.ensure_future(self.drain(len(self.queue)))

    async def drain(self, count: int) -> None:
        """Release the first `count` groups (fewer if others released them meanwhile)."""
        target = self.released + count
        async with self.lock:
            producer = faust_patches.aiokafka_producer(self.app)
            while self.queue and self.released < target:
                outputs, records = self.queue[0]
                for fut in outputs:
                    if not fut.done():
                        await asyncio.wait([fut])
                    if fut.cancelled() or fut.exception() is not None:
                        # never write the state of an event whose outputs were not published, and
                        # fail the flush so faust does not commit past it
                        raise RuntimeError(f"an output was not produced: {fut.exception() if not fut.cancelled() else 'cancelled'}")
                # RocksDB keeps one changelog offset per partition: each batch's last record sets
                # it (a partition's batches are acknowledged in order)
                on_sent = {(topic, partition): done for topic, _, _, partition, done in records}
                for fut, topic, partition, count in await send_batches(
                        producer, ((t, k, v, p, None) for t, k, v, p, _ in records)):
                    fut.add_done_callback(self.on_delivery)
                    fut.add_done_callback(functools.partial(on_sent[(topic, partition)], count=count))
                self.queue.popleft()
                self.released += 1


async def send_batches(producer: Any, records: Iterable[tuple[str, bytes, bytes, int, list | None]]) -> list:
    """`records` (topic, key, value, partition, headers) handed to the aiokafka producer as one
    record batch per topic partition (more when one fills up); returns (delivery future, topic,
    partition, records in the batch) for each batch.

    `send()` for each record costs a future, a metadata check and a done callback per record;
    `create_batch()` + `send_batch()` cost them once per batch. The order within a partition is
    the records' (the producer sends a partition's batches in the order given)."""
    batches: dict[tuple[str, int], Any] = {}
    sent = []
    for topic, key, value, partition, headers in records:
        batch = batches.get((topic, partition))
        if batch is None:
            batch = batches[(topic, partition)] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full
            sent.append((await producer.send_batch(batch, topic, partition=partition), topic, partition,
                         batch.record_count()))
            batch = batches[(topic, partition)] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers)  # the first always fits
    for (topic, partition), batch in batches.items():
        sent.append((await producer.send_batch(batch, topic, partition=partition), topic, partition,
                     batch.record_count()))
    return sent


def install(rt: Any) -> None:
    """Register the agent, the assignment hooks and the faust patches on `rt.app`."""
    app = rt.app
    sources = set(rt.topic_names.sources)
    faust_patches.apply(app, sources, rt.settings.fetch_min_kb * 1024, rt.settings.fetch_wait_ms,
                        rt.settings.fetch_round_ms)
    faust_patches.start_tables_at_once(app)
    faust_patches.commit_log_on_demand()
    if rt.settings.store.startswith("rocksdb"):
        faust_patches.restore_in_bulk(app, faust_patches.BulkRestore(rt.settings.client_kwargs()))
    processor = rt.processor = Processor(rt, TableWriter(rt.resources), TableWriter(rt.loss))
    if rt.settings.store.startswith("rocksdb"):
        rt.rocksdb_memory = faust_patches.RocksDBMemory(rt.settings.rocksdb_memory_mb)
        for table in (rt.resources, rt.loss):
            rt.rocksdb_memory.install(table.data)
    rt.progress = liveness.Progress(rt.settings.stall_timeout_s, monotonic())
    rt.folded = {}  # lane -> the last offset the agent folded (liveness.agent_pending)
    check_delivery = _delivery_check(app)
    rt.changelog_queue = ChangelogQueue(app, check_delivery)
    first_offsets: dict[tuple[str, int], int] = {}  # lane -> the first offset read since assignment
    _on_assignment(rt, processor, sources, first_offsets)
    _watch_commits(rt, sources)
    produce = _producer(app, processor, rt.changelog_queue, check_delivery)
    _agent(rt, processor, produce, first_offsets)


def _delivery_check(app: Any) -> Callable[[Any], None]:
    """The callback of every produced record: the first failure crashes the app, so nothing is
    committed past a record Kafka did not take."""
    failures: list[BaseException] = []

    def check_delivery(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None and not failures:
            failures.append(fut.exception())
            log.error("a record could not be produced (%s): stopping without committing past it", fut.exception())
            asyncio.ensure_future(app.crash(fut.exception()))

    return check_delivery


def _producer(app: Any, processor: Processor, changelog: ChangelogQueue,
              check_delivery: Callable[[Any], None]) -> Callable[[], Awaitable[None]]:
    async def produce() -> None:
        """The batch's outputs to the producer now, its changelog records once they are acked."""
        outputs = []
        if processor.outbox:
            for fut, _, _, _ in await send_batches(faust_patches.aiokafka_producer(app), processor.outbox):
                fut.add_done_callback(check_delivery)
                outputs.append(fut)
            processor.outbox.clear()
        records: list = []
        for writer in (processor.resources, processor.loss):  # tests swap in DictStores
            records.extend(getattr(writer, "changelog", ()))
            getattr(writer, "changelog", []).clear()
        if records:
            changelog.put(outputs, records)
        changelog.kick()

    return produce


GUARD_WAIT_S = 120.0  # the longest the end of a recovery waits for the output tails


def _on_assignment(rt: Any, processor: Processor, sources: set[str], first_offsets: dict) -> None:
    app = rt.app
    produced = [*processor.output_topics.values(), rt.deadletter.get_topic_name(),
                *(table.changelog_topic.get_topic_name() for table in (rt.resources, rt.loss))]
    # set once the output tails of the current assignment are read: faust recovers the tables while
    # `_assigned` reads them, and a recovery that ends first (nothing or little to restore) would
    # let replayed records through before their partition's guard is there
    guards_read = asyncio.Event()

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:  # noqa: ARG001
        guards_read.clear()

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001
        guards_read.clear()
        first_offsets.clear()
        partitions = {tp.partition for tp in assigned if tp.topic in sources}
        log.info("assigned relay partitions %s", sorted(partitions))
        processor.on_assigned(partitions)
        # read the output tails now, while faust holds the partitions paused: an await inside the
        # agent during the recovery that follows widens faust-streaming#596 (records skipped)
        try:
            await faust_patches.track_every_topic(faust_patches.aiokafka_producer(app), produced)  # before records flow
            try:
                await processor.load_guards(sorted(partitions))
            except Exception as exc:  # noqa: BLE001 - the guard only saves duplicates
                log.warning("partitions %s: output tails not read (%s); a replay may publish copies",
                            sorted(partitions), exc)
        finally:
            guards_read.set()

    @app.on_rebalance_complete.connect
    async def _hold_flow_for_seek(sender: Any, **kwargs: Any) -> None:  # noqa: ARG001
        # faust sends this at the start of the recovery's end, before the stream partitions resume
        try:
            await asyncio.wait_for(guards_read.wait(), GUARD_WAIT_S)
        except TimeoutError:
            log.warning("output tails not read after %.0fs; the streams resume without them", GUARD_WAIT_S)
        await faust_patches.hold_flow_for_seek(app)


def _watch_commits(rt: Any, sources: set[str]) -> None:
    app = rt.app
    stalls: dict[Any, tuple[int, int]] = {}

    @app.timer(5.0)
    async def _commit_watch() -> None:
        """Keep faust's acked offsets committable (faust_patches.repair_acked_offsets): a
        partition whose head stays unacked is read again from its committed offset; the records
        after the hole are duplicates the dedup drops."""
        if app.rebalancing or getattr(app, "in_recovery", False) or not rt.ready:
            return
        consumer = app.consumer
        for tp, committed, head in faust_patches.repair_acked_offsets(consumer, sources, stalls):
            log.warning("%s[%d]: offsets %d..%d were skipped by the consumer (faust-streaming#596); "
                        "reading them again", tp.topic, tp.partition, committed, head - 1)
            rt.metrics.reread += head - committed
            await consumer.seek(tp, committed)


def _agent(rt: Any, processor: Processor, produce: Callable[[], Awaitable[None]], first_offsets: dict) -> None:
    """The agent over the relay topics: what its channel holds read as one batch
    (faust_patches.event_batches: a backlog a thousand records at a time, a trickle one by one,
    nothing held between two reads), folded by the processor, then acked. faust's rebalance waits
    for every record it handed out to be acked (Consumer.wait_empty), which no held batch delays."""
    app = rt.app
    progress, folded = rt.progress, rt.folded

    def fold_records(events: list) -> Any:
        records: list = []
        for ev in events:
            msg = ev.message
            lane = (msg.topic, msg.partition)
            if lane not in first_offsets:
                first_offsets[lane] = msg.offset
                log.info("%s[%d]: first record read at offset %d", msg.topic, msg.partition, msg.offset)
            folded[lane] = msg.offset
            records.append((msg.topic, msg.partition, msg.key, msg.value))
        processor.handle_batch(records)
        return produce()

    @app.agent(rt.source, name="pipeline-agent", concurrency=1)
    async def process(stream: Any) -> Any:
        # faust's worker leaves the root logger at DEBUG (its handler filters): every debug call
        # of aiokafka's producer would build a log record, a fifth of the per-event cost
        logging.getLogger().setLevel(getattr(logging, rt.settings.loglevel.upper(), logging.WARNING))
        manual = stream.noack()  # acked here, after the batch they are in
        async for events in faust_patches.event_batches(manual, rt.settings.batch_size):
            progress.batch_started(monotonic())
            if liveness.TEST_STALL:
                await liveness.stall_for_test()
            await fold_records(events)
            for event in events:
                await manual.ack(event)
            progress.batch_done(monotonic())

    rt.agent = process
