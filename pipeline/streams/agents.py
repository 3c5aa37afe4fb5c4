"""The agent: one stream over every relay topic, concurrency 1, the pure state machine inside.

Per relay record: decode (codec) -> watermark -> dedup + operations + node state (operations.on_event)
-> write the resource record -> publish outputs -> loss counts -> the watchdog's due checks for this
partition (operations.on_expiry), written in the same stream context.

What a crash can and cannot do (at-least-once input, faust commits every 2.8 s):

* outputs go to the partition number of their event (output topics have the relay topics'
  partition count) with a header ``id`` = the output's deterministic id;
* a table's changelog record is produced only after the outputs of its event are acknowledged
  (`ChangelogQueue`), and faust's commit waits for that queue: in Kafka, state is never ahead of
  outputs, and a committed offset means both are there;
* after an assignment, before any record flows, the tail of each output partition is re-read
  (`replay_guard_s` before its newest record): the ids found there are not published again, so an
  event replayed because its state write did not make it before the crash does not duplicate the
  outputs it already published;
* RocksDB tables left by an unclean stop are rebuilt from the changelog (command.py), since their
  local writes may be ahead of what reached Kafka.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from time import monotonic
import os
import signal
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import orjson

from .. import codec
from . import operations, state as state_view
from .models import Counter, Output, micros
from .watchdog import Watchdog

__all__ = ["Processor", "install"]

log = logging.getLogger("pipeline.worker")

Sink = Callable[[str, bytes, Output, int], None]


class DirectTable:
    """A faust table whose writes go to its store and whose changelog records go to the outbox.

    faust's own path (`table[k] = v` -> `send_soon` -> ProducerBuffer) drains one record per event
    loop turn; measured here it tops out near 2,500 records/s and stalls the stream ("producer
    buffer full"), while this worker writes about three records per event. The store is written
    exactly as `Table.__setitem__` does (the current event picks the RocksDB partition), the
    changelog record is the one faust would send (same topic, key, value, partition), and the
    RocksDB offset bookkeeping of `Table._on_changelog_sent` is kept through `on_sent`.
    Faust's commit flushes the same aiokafka producer before committing offsets, so the
    at-least-once contract is unchanged.
    """

    def __init__(self, table: Any, outbox: list) -> None:
        self.table = table
        self.store = table.data
        self.topic = table.changelog_topic.get_topic_name()
        self.outbox = outbox

    def get(self, key: bytes, default: Any = None) -> Any:
        return self.store.get(key, default)

    def items(self) -> Any:
        return self.table.items()

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.store[key] = value
        self.outbox.append((self.topic, key, value, _current_partition(), None, self._on_sent, True))

    def _on_sent(self, fut: Any) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        meta = fut.result()
        self.store.set_persisted_offset(meta.topic_partition, meta.offset)


class ChangelogQueue:
    """Table changelog records, released to the producer in order, each once the outputs of its
    event are acknowledged.

    A changelog record reaching Kafka before the outputs of the same event would, after a crash,
    leave a state that says "done" for outputs that were never published: the replayed event is a
    duplicate, its outputs are lost. Outputs and changelog go to different partitions, so the
    producer alone does not order them. Holding each changelog record until its event's outputs
    are acknowledged makes the changelog never ahead of the outputs; faust's commit waits for this
    queue (`flush` is wrapped), so a committed offset still means "state and outputs are in Kafka".
    """

    def __init__(self, app: Any, on_delivery: Callable[[Any], None]) -> None:
        self.app = app
        self.on_delivery = on_delivery
        self.queue: collections.deque = collections.deque()
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.released = 0  # records handed to the producer so far
        producer = app.producer
        original = producer.flush

        async def flush() -> None:
            # the offsets being committed were taken before this call: the records queued now
            # are theirs (and maybe a few more); later ones belong to a later commit
            await self.drain(len(self.queue))
            await original()

        producer.flush = flush  # faust: commit and shutdown both flush the producer first

    def put(self, outputs: list, record: tuple) -> None:
        self.queue.append((list(outputs), record))

    def kick(self) -> None:
        if self.queue and (self.task is None or self.task.done()):
            self.task = asyncio.ensure_future(self.drain(len(self.queue)))

    async def drain(self, count: int) -> None:
        """Release the first `count` records (fewer if others released them meanwhile)."""
        target = self.released + count
        async with self.lock:
            producer = self.app.producer._ensure_producer()
            while self.queue and self.released < target:
                outputs, (topic, key, value, partition, on_sent) = self.queue[0]
                for fut in outputs:
                    if not fut.done():
                        await asyncio.wait([fut])
                    if fut.cancelled() or fut.exception() is not None:
                        # never write the state of an event whose outputs were not published, and
                        # fail the flush so faust does not commit past it
                        raise RuntimeError(f"an output was not produced: {fut.exception() if not fut.cancelled() else 'cancelled'}")
                fut = await producer.send(topic, value, key=key, partition=partition)
                fut.add_done_callback(self.on_delivery)
                fut.add_done_callback(on_sent)
                self.queue.popleft()
                self.released += 1


def _current_partition() -> int:
    from faust.streams import current_event

    event = current_event()
    if event is None:
        raise RuntimeError("table written outside of stream iteration")
    return event.message.partition


class Processor:
    """The agent's body, free of faust streams: tests drive it with plain mappings."""

    def __init__(self, rt: Any, resources: MutableMapping[bytes, bytes],
                 loss: MutableMapping[bytes, bytes], sink: Sink | None = None) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.machine = rt.settings.machine
        self.resources = resources
        self.loss = loss
        self.metrics = rt.metrics
        self.recent = rt.recent
        self.watchdog = Watchdog(int(rt.settings.lateness_s * 1_000_000))
        self.sink: Sink = sink or self._send
        # records to produce after this event, in order: outputs before the table writes they
        # follow from (see DirectTable); the agent hands them to the producer
        self.outbox: list[tuple[str, bytes | None, bytes, int | None, list | None, Any, bool]] = []
        self.output_topics = {kind: topic.get_topic_name() for kind, topic in rt.outputs.items()} \
            if hasattr(rt, "outputs") else {}
        self.values = codec.Encoder(rt.settings.value_format, rt.settings.avro_framing)
        self.stale = True  # the watchdog must be rebuilt from the table before the next event
        self.guarded: dict[int, set[str]] = {}  # partition -> output ids already in Kafka

    # --- faust-facing ---------------------------------------------------------------------------

    def _send(self, kind: str, key: bytes, out: Output, partition: int) -> None:
        topic = self.output_topics[kind]
        value, content_type = self.values.value(kind, out.record, topic)
        self.outbox.append((topic, key, value, partition, [("id", out.id.encode()), ("content-type", content_type)],
                            None, False))

    def on_assigned(self, partitions: Iterable[int]) -> None:
        self.stale = True
        self.guarded = {p: ids for p, ids in self.guarded.items() if p in partitions}

    def rebuild(self) -> None:
        """The watchdog's heaps and watermarks, from the table (after recovery)."""
        self.watchdog.clear()
        for key, raw in self.resources.items():
            st = orjson.loads(raw)
            lane = (st.get("t", ""), st.get("p", 0))
            if st.get("w"):
                self.watchdog.restore(lane, st["w"])
            self.watchdog.schedule(lane, key, operations.pending(st, self.machine))
        self.stale = False
        self.rt.ready = True

    # --- per record -----------------------------------------------------------------------------

    def handle(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        m = self.metrics
        m.events += 1
        m.last_at = now = monotonic()
        if not m.first_at:
            m.first_at = now
        if self.stale:
            self.rebuild()
        try:
            event = codec.decode_event(value)
            ts = micros(event["timestamp"])
        except (codec.CodecError, ValueError, KeyError, TypeError) as exc:
            self._deadletter(topic, partition, key, value, exc)
            return
        wd = self.watchdog
        lane = (topic, partition)  # see watchdog: one clock per topic partition
        wd.observe(lane, ts)
        if key:
            raw = self.resources.get(key)
            res = operations.on_event(orjson.loads(raw) if raw is not None else None, event, ts,
                                      self.machine, partition, owned=True)
            if res.verdict == "new":
                m.processed += 1
                self.recent.event(event["event_type"])
                self._commit(lane, key, res)
            elif res.verdict == "duplicate":
                m.duplicates += 1
            else:
                m.beyond_horizon += 1
        else:
            m.unkeyed += 1
        mark = wd.watermark(lane)
        m.watermarks[lane] = mark
        for due_key, expiry in wd.due(lane):
            raw = self.resources.get(due_key)
            if raw is None:
                continue
            res = operations.on_expiry(orjson.loads(raw), due_key.decode(), expiry, mark, self.machine, owned=True)
            if res.changed:
                self._commit(lane, due_key, res)
        if self.settings.stop_after and m.events >= self.settings.stop_after:
            self._stop_worker()

    def _commit(self, lane: tuple[str, int], key: bytes, res: operations.Result) -> None:
        topic, partition = lane
        # outputs first: they are enqueued before the changelog record of the same change
        guard = self.guarded.get(partition)
        for out in res.outputs:
            if guard is not None and out.id in guard:
                self.metrics.replay_suppressed += 1
                continue
            self.sink(out.kind, out.key.encode(), out, partition)
            self.metrics.outputs[out.kind] += 1
            if out.kind == "operation":
                self.recent.on_operation(out.record)
            elif out.kind == "alert":
                self.metrics.alerts[out.record["kind"]] += 1
                self.recent.on_alert(out.record)
        res.state["t"] = topic
        res.state["w"] = self.watchdog.watermark(lane)
        self.resources[key] = orjson.dumps(res.state)
        if res.counters:
            self._count(partition, res.counters)
        if res.expiries:
            self.watchdog.schedule(lane, key, res.expiries)

    def _count(self, partition: int, counters: list[Counter]) -> None:
        rows: dict[bytes, list[Counter]] = {}
        for c in counters:
            rows.setdefault(state_view.loss_key(partition, c.publisher, c.operation), []).append(c)
        for row_key, cs in rows.items():
            raw = self.loss.get(row_key)
            counts = orjson.loads(raw) if raw is not None else {}
            for c in cs:
                counts[c.what] = counts.get(c.what, 0) + 1
            self.loss[row_key] = orjson.dumps(counts)

    def _deadletter(self, topic: str, partition: int, key: bytes | None, value: bytes, exc: Exception) -> None:
        self.metrics.undecodable += 1
        self.recent.deadletter()
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        self.rt.deadletter.send_soon(key=key, value=value, headers=[
            ("reason", reason.encode()), ("source", f"{topic}:{partition}".encode())])

    def _stop_worker(self) -> None:
        if not getattr(self, "_stopping", False):
            self._stopping = True
            log.warning("read %d relay records (--stop-after): stopping", self.metrics.events)
            os.kill(os.getpid(), signal.SIGTERM)  # the same clean shutdown as a user's SIGTERM

    # --- the replay guard -----------------------------------------------------------------------

    async def load_guard(self, partition: int) -> None:
        """Read the tail of each output topic's `partition`: ids a predecessor already published."""
        window_ms = int(self.settings.replay_guard_s * 1000)
        if window_ms <= 0:
            return
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**self.settings.client_kwargs(), enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        ids: set[str] = set()
        await consumer.start()
        try:
            tps = [TopicPartition(t, partition) for t in self.rt.topic_names.outputs]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                end = ends.get(tp, 0)
                if not end:
                    continue
                consumer.seek(tp, end - 1)
                last = await consumer.getone(tp)
                found = await consumer.offsets_for_times({tp: max(0, last.timestamp - window_ms)})
                start = found[tp].offset if found.get(tp) else end - 1
                consumer.seek(tp, start)
                while await consumer.position(tp) < end:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    for rec in batch.get(tp, ()):
                        for name, value in rec.headers or ():
                            if name == "id":
                                ids.add(value.decode())
                    if not batch:
                        break
        finally:
            await consumer.stop()
        if ids:
            self.guarded[partition] = ids
            log.info("partition %d: %d outputs already published will not be sent again", partition, len(ids))


def install(rt: Any) -> None:
    """Register the agent and the assignment hook on `rt.app`."""
    app = rt.app
    processor = Processor(rt, rt.resources, rt.loss)
    processor.resources = DirectTable(rt.resources, processor.outbox)
    processor.loss = DirectTable(rt.loss, processor.outbox)
    rt.processor = processor
    failures: list[BaseException] = []

    def check_delivery(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None and not failures:
            failures.append(fut.exception())
            log.error("a record could not be produced (%s): stopping without committing past it", fut.exception())
            asyncio.ensure_future(app.crash(fut.exception()))

    changelog = ChangelogQueue(app, check_delivery)
    rt.changelog_queue = changelog

    async def produce() -> None:
        producer = app.producer._ensure_producer()  # the aiokafka producer faust flushes on commit
        send = producer.send
        outputs = []
        for topic, key, value, partition, headers, on_sent, deferred in processor.outbox:
            if deferred:
                changelog.put(outputs, (topic, key, value, partition, on_sent))
                continue
            fut = await send(topic, value, key=key, partition=partition, headers=headers)
            fut.add_done_callback(check_delivery)
            outputs.append(fut)
        processor.outbox.clear()
        changelog.kick()

    first_offsets: dict[tuple[str, int], int] = {}

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001
        first_offsets.clear()
        partitions = {tp.partition for tp in assigned if tp.topic in rt.topic_names.sources}
        log.info("assigned relay partitions %s", sorted(partitions))
        processor.on_assigned(partitions)
        # read the output tails now, while faust holds the partitions paused: an await inside the
        # agent during the recovery that follows widens faust-streaming#596 (records skipped)
        for p in sorted(partitions):
            try:
                await processor.load_guard(p)
            except Exception as exc:  # noqa: BLE001 - the guard only saves duplicates
                log.warning("partition %d: output tail not read (%s); a replay may publish copies", p, exc)

    @app.on_rebalance_complete.connect
    async def _hold_flow_for_seek(sender: Any, **kwargs: Any) -> None:  # noqa: ARG001
        """Stop the fetcher while faust seeks the relay partitions back to their committed offsets.

        faust sends this signal at the top of `Recovery.on_recovery_completed` (and of
        `_resume_streams`); that method then resumes the stream partitions and awaits
        `Consumer.perform_seek()` with the flow still active since the changelog read
        (faust/tables/recovery.py:451-452, then 649-656; flow resumed again only at 659-660).
        aiokafka's `seek_to_committed` asks the coordinator once per assigned partition
        (aiokafka/consumer/consumer.py:897-902), so meanwhile the fetcher hands the agent records it
        had prefetched and moves `_read_offset` ahead; `perform_seek` then moves it back
        (faust/transport/consumer.py:569), the next record looks like a jump, and `_drain_messages`
        records the range as a "gap" (consumer.py:1212-1215, 1164) although those offsets are read
        and acked (again). `_new_offset` merges the gap into the acked offsets without dropping what
        is already there (consumer.py:1127): the list holds offsets twice, `consecutive_numbers`
        ends its run at the first duplicate (consumer.py:1145), and each commit advances the
        partition by about one record. The agent has read everything, the group never catches up
        (seen after a SIGKILL: the restart has a changelog to recover and records to re-read, so the
        seek has a backlog to race). With the flow stopped here the fetcher delivers nothing
        between the resume and the seek; faust resumes the flow itself right after the seek. What
        a fetch already under way returns meanwhile faust discards, to be fetched again from the
        position the seek sets (`_rewind_uncommitted_on_seek` makes that true for every partition).
        """
        consumer = app.consumer
        if not getattr(consumer, "_pipeline_rewinds_uncommitted", False):
            _rewind_uncommitted_on_seek(consumer)
        consumer.stop_flow()
        app.flow_control.suspend()
        await asyncio.sleep(0)  # let the drain loop see the suspension before the seek starts

    def _rewind_uncommitted_on_seek(consumer: Any) -> None:
        """Make faust's "seek to committed" also rewind partitions that have no committed offset.

        faust discards what the fetcher returns while its flow is stopped (or for a partition it
        has just paused) and relies on `perform_seek` to fetch it again (faust/transport/consumer.py:
        766-772). aiokafka's `seek_to_committed` skips partitions without a committed offset
        (aiokafka/consumer/consumer.py:901), so for those the position stays past records nobody
        processed: they are never read and never committed, and the group's lag stays above zero
        (seen in tests/faults: a restart before the first commit of a small topic). Such a
        partition goes back to its beginning, where `auto_offset_reset=earliest` started it;
        what it re-reads is dropped by the dedup.
        """
        from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

        original = consumer.perform_seek

        async def perform_seek() -> None:
            await original()
            fresh = [tp for tp in consumer.assignment()
                     if tp.topic in rt.topic_names.sources and not consumer._read_offset.get(tp)]
            if fresh:
                log.info("%d relay partitions without a committed offset: read from their beginning", len(fresh))
                await consumer._thread.seek_to_beginning(*(ensure_aiokafka_TP(tp) for tp in fresh))

        consumer.perform_seek = perform_seek
        consumer._pipeline_rewinds_uncommitted = True

    stalls: dict[Any, tuple[int, int]] = {}

    @app.timer(5.0)
    async def _commit_watch() -> None:
        """Keep faust's acked offsets committable (faust-streaming#596 and its kin).

        faust commits, per partition, the first run of consecutive offsets in `Consumer._acked[tp]`
        that starts at the committed offset (`Consumer._new_offset`). Two states of that list stop
        the committed offset although the agent has read the records, and the group's lag then
        never reaches zero:

        * an offset listed twice: the run ends at the first duplicate, so each commit advances by
          about one record. This is what the recovery-seek race left behind (see
          `_hold_flow_for_seek`, which prevents it); should it happen anyway, the list is reduced to
          distinct offsets, as `Consumer.ack` keeps it with `_acked_index`, and a warning says so.
        * a hole at the head: faust marked records as read that never reached the agent, so they
          are never acked (#596). When a partition shows the same hole on two checks in a row, it
          is read again from the committed offset: the skipped records are processed, the ones
          after them are duplicates the dedup drops, and commits resume.
        """
        if app.rebalancing or getattr(app, "in_recovery", False) or not rt.ready:
            return
        consumer = app.consumer
        acked_by_tp = getattr(consumer, "_acked", {})
        for tp, acked in list(acked_by_tp.items()):
            committed = consumer._committed_offset.get(tp)
            if not acked or committed is None or tp.topic not in rt.topic_names.sources:
                stalls.pop(tp, None)
                continue
            distinct = set(acked)
            if len(distinct) < len(acked):
                # no await between reading and rewriting: faust's commit (same loop) sees either
                log.warning("%s[%d]: %d acked offsets were listed twice, which lets faust commit one "
                            "record at a time; keeping each once", tp.topic, tp.partition,
                            len(acked) - len(distinct))
                acked[:] = sorted(distinct)
                consumer._acked_index[tp].update(distinct)
            head = min(acked)
            if head <= committed:
                stalls.pop(tp, None)
                continue
            if stalls.get(tp) != (committed, head):
                stalls[tp] = (committed, head)
                continue
            stalls.pop(tp, None)
            log.warning("%s[%d]: offsets %d..%d were skipped by the consumer (faust-streaming#596); "
                        "reading them again", tp.topic, tp.partition, committed, head - 1)
            rt.metrics.reread += head - committed
            await consumer.seek(tp, committed)

    @app.task
    async def _dump_on_sigusr1() -> None:
        """`kill -USR1 <pid>`: every asyncio task's stack to the log (what is the worker waiting on?)."""
        import io

        def dump() -> None:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                out.write(f"{task.get_name()}:\n")
                coro = task.get_coro()
                while coro is not None:  # follow the await chain down to what is pending
                    frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
                    if frame is not None:
                        out.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
                    coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
            log.warning("asyncio tasks:\n%s", out.getvalue())

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)

    @app.agent(rt.source, name="pipeline-agent", concurrency=1)
    async def process(stream: Any) -> Any:
        # faust's worker leaves the root logger at DEBUG (its handler filters): every debug call
        # of aiokafka's producer would build a log record, a fifth of the per-event cost
        logging.getLogger().setLevel(getattr(logging, rt.settings.loglevel.upper(), logging.WARNING))
        async for event in stream.events():
            msg = event.message
            if (msg.topic, msg.partition) not in first_offsets:
                first_offsets[(msg.topic, msg.partition)] = msg.offset
                log.info("%s[%d]: first record read at offset %d", msg.topic, msg.partition, msg.offset)
            processor.handle(msg.topic, msg.partition, msg.key, msg.value)
            if processor.outbox:
                await produce()

    rt.agent = process
