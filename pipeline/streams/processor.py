"""The agent's body, free of faust streams: `Processor` folds batches of relay records into the
tables and hands on the outputs (agents.py is the faust wiring around it; tests drive it with
`DictStore` tables).

Per batch, decode every record (codec), then per record in order: watermark -> dedup + operations +
node state (operations.on_event) -> outputs -> loss counts -> the watchdog's due checks for its
partition (operations.on_expiry). Each resource's state is read from the table the first time it is
needed (then kept parsed between batches, up to `WARM_STATES`) and written back once per batch; the
outputs go to the outbox in order, the table writes to the tables' writers after them. A bridge's
heartbeat (null key, event type `pipeline.heartbeat`) is an event of its lane with no resource: it
moves the lane's clock (watchdog, clock.py) and the lane's due checks run, nothing else.
"""
from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from time import monotonic, process_time
from typing import Any

import orjson

from .. import catalog, codec, events
from . import operations
from . import state as state_view
from .clock import heartbeat_of
from .models import Counter, Output, ResourceState
from .watchdog import Watchdog

__all__ = ["DictStore", "Processor", "Record", "Sink"]

log = logging.getLogger("pipeline.worker")

Sink = Callable[[str, bytes, Output, int], None]
Record = tuple[str, int, "bytes | None", bytes]  # relay topic, partition, key, value
_ABSENT = object()  # a key read and not in the table
# An observation carries the time its resource changed, not a time the source vouches for: every
# notification before it may not be in Kafka yet (a bridge down), so it must not move the clock.
OBSERVED = catalog.OBSERVED_EVENT_TYPE
# Parsed states kept between batches (the table stays the truth: each batch writes its states back
# and its changelog records out): a node's next batch skips the RocksDB read and the JSON parse,
# about 5 % of the worker. Dropped all at once past this many (a few KB each), on every assignment
# and when a batch fails.
WARM_STATES = 20_000


class DictStore(dict):
    """A table as a plain dict, read and written by partition like `TableWriter` (tests, tools)."""

    def get_in(self, partition: int, key: bytes) -> bytes | None:  # noqa: ARG002 - one dict for all
        return self.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:  # noqa: ARG002
        self[key] = value


class Processor:
    """The agent's body, free of faust streams: tests drive it with `DictStore` tables."""

    def __init__(self, rt: Any, resources: Any, loss: Any, sink: Sink | None = None) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.machine = rt.settings.machine
        self.resources = resources  # get_in(partition, key), put(partition, key, value), items()
        self.loss = loss
        self.metrics = rt.metrics
        self.reporter = rt.reporter
        self.watchdog = Watchdog(int(rt.settings.lateness_s * 1_000_000))
        self.sink: Sink = sink or self._send
        # outputs of the current batch, in order: (topic, key, value, partition, headers)
        self.outbox: list[tuple[str, bytes, bytes, int, list]] = []
        self.output_topics = {kind: topic.get_topic_name() for kind, topic in rt.outputs.items()} \
            if hasattr(rt, "outputs") else {}
        self.values = codec.Encoder(rt.settings.value_format, rt.settings.avro_framing)
        self.stale = True  # the watchdog must be rebuilt from the table before the next event
        self.guarded: dict[int, set[str]] = {}  # partition -> output ids already in Kafka
        # key -> state dict (or _ABSENT) as the last batch left it; what this batch writes back
        self._states: dict[bytes, Any] = {}
        self._dirty: dict[bytes, int] = {}  # resource key -> partition
        self._loss_rows: dict[bytes, tuple[int, dict]] = {}  # loss key -> (partition, counts)

    # --- faust-facing ---------------------------------------------------------------------------

    def _send(self, kind: str, key: bytes, out: Output, partition: int) -> None:
        topic = self.output_topics[kind]
        value, content_type = self.values.value(kind, out.record, topic)
        self.outbox.append((topic, key, value, partition, [("id", out.id.encode()), ("content-type", content_type)]))

    def on_assigned(self, partitions: Iterable[int]) -> None:
        self.stale = True
        self._states.clear()  # a partition may come back changed by another worker, or recovered
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

    # --- per batch ------------------------------------------------------------------------------

    def handle(self, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
        """One record: a batch of one."""
        self.handle_batch([(topic, partition, key, value)])

    def handle_batch(self, records: Sequence[Record]) -> None:
        """Fold `records` (in the order read) into the tables; outputs to `sink`, in order."""
        if not records:
            return
        with codec.pinned():  # the schemas' directory, looked up once for the batch
            try:
                self._fold(records)
            except BaseException:
                self._states.clear()  # half-folded states are not the table's
                self._dirty.clear()
                self._loss_rows.clear()
                raise

    def _fold(self, records: Sequence[Record]) -> None:
        m = self.metrics
        if not m.first_at:
            m.first_at, m.cpu_first = monotonic(), process_time()
        if self.stale:
            self.rebuild()
        decoded = _decode(records)
        wd = self.watchdog
        machine = self.machine
        states = self._states
        watermarks = m.watermarks
        for topic, partition, key, event, ts in decoded:
            m.events += 1
            if isinstance(ts, Exception):
                self._deadletter(topic, partition, key, event, ts)
                continue
            lane = (topic, partition)  # see watchdog: one clock per topic partition
            if isinstance(ts, tuple):
                # an event of its lane without a resource: it moves the lane's clock (README, The
                # clock), then the lane's due checks run below, in this record's stream context
                wd.heartbeat(lane, *ts)
                m.heartbeats += 1
            elif key:
                if event["event_type"] != OBSERVED:  # the reconciler does not vouch for time
                    wd.observe(lane, ts)
                state = self._state(partition, key)
                res = operations.on_event(state, event, ts, machine, partition, owned=True)
                if res.verdict == "new":
                    m.processed += 1
                    self.reporter.event(event["event_type"])
                    states[key] = res.state
                    self._commit(lane, key, res)
                elif res.verdict == "duplicate":
                    m.duplicates += 1
                else:
                    m.beyond_horizon += 1
            else:
                wd.observe(lane, ts)
                m.unkeyed += 1
            mark = wd.watermark(lane)
            watermarks[lane] = mark
            for due_key, expiry in wd.due(lane):
                state = self._state(partition, due_key)
                if state is None:
                    continue
                res = operations.on_expiry(state, due_key.decode(), expiry, mark, machine, owned=True)
                if res.changed:
                    self._commit(lane, due_key, res)
        self._write_back()
        m.last_at, m.cpu_last = monotonic(), process_time()
        if self.settings.stop_after and m.events >= self.settings.stop_after:
            self._stop_worker()

    def _state(self, partition: int, key: bytes) -> ResourceState | None:
        """The resource's state as the last change left it, read from the table when not kept."""
        state = self._states.get(key)
        if state is None:
            raw = self.resources.get_in(partition, key)
            state = self._states[key] = _ABSENT if raw is None else orjson.loads(raw)
        return None if state is _ABSENT else state  # type: ignore[return-value]

    def _write_back(self) -> None:
        states = self._states
        for key, partition in self._dirty.items():
            self.resources.put(partition, key, orjson.dumps(states[key]))
        for row_key, (partition, counts) in self._loss_rows.items():
            self.loss.put(partition, row_key, orjson.dumps(counts))
        if len(states) > WARM_STATES:
            states.clear()
        self._dirty.clear()
        self._loss_rows.clear()

    def _commit(self, lane: tuple[str, int], key: bytes, res: operations.Result) -> None:
        topic, partition = lane
        guard = self.guarded.get(partition)
        for out in res.outputs:
            if guard is not None and out.id in guard:
                self.metrics.replay_suppressed += 1
                continue
            self.sink(out.kind, out.key.encode(), out, partition)
            self.metrics.outputs[out.kind] += 1
            if out.kind == "operation":
                self.reporter.operation(out.record)
            elif out.kind == "alert":
                self.metrics.alerts[out.record["kind"]] += 1
                self.reporter.alert(codec.with_datetimes("alert", out.record))  # the views show RFC 3339
        res.state["t"] = topic
        res.state["w"] = self.watchdog.watermark(lane)
        self._dirty[key] = partition
        if res.counters:
            self._count(partition, res.counters)
        if res.expiries:
            self.watchdog.schedule(lane, key, res.expiries)

    def _count(self, partition: int, counters: list[Counter]) -> None:
        rows = self._loss_rows
        for c in counters:
            row_key = state_view.loss_key(partition, c.publisher, c.operation)
            row = rows.get(row_key)
            if row is None:
                raw = self.loss.get_in(partition, row_key)
                row = rows[row_key] = (partition, orjson.loads(raw) if raw is not None else {})
            counts = row[1]
            counts[c.what] = counts.get(c.what, 0) + 1

    def _deadletter(self, topic: str, partition: int, key: bytes | None, value: bytes, exc: Exception) -> None:
        self.metrics.undecodable += 1
        self.reporter.deadletter()
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        self.rt.deadletter.send_soon(key=key, value=value, headers=[
            ("reason", reason.encode()), ("source", f"{topic}:{partition}".encode())])

    def _stop_worker(self) -> None:
        if not getattr(self, "_stopping", False):
            self._stopping = True
            log.warning("read %d relay records (--stop-after): stopping", self.metrics.events)
            os.kill(os.getpid(), signal.SIGTERM)  # the same clean shutdown as a user's SIGTERM

    # --- the replay guard -----------------------------------------------------------------------

    async def load_guards(self, partitions: Sequence[int]) -> None:
        """Read the tail of each output topic's `partitions`: ids a predecessor already published.
        One consumer and one request of each kind for all of them (a consumer per partition cost
        about 0.7 s each on a loaded machine, and the streams wait for the guards)."""
        window_ms = int(self.settings.replay_guard_s * 1000)
        if window_ms <= 0 or not partitions:
            return
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**self.settings.client_kwargs(), enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        ids: dict[int, set[str]] = {p: set() for p in partitions}
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in self.rt.topic_names.outputs for p in partitions]
            consumer.assign(tps)
            ends = {tp: end for tp, end in (await consumer.end_offsets(tps)).items() if end}
            for tp, end in ends.items():
                consumer.seek(tp, end - 1)
            last = await _read_until(consumer, ends, lambda tp, rec: None)  # each one's newest record
            found = await consumer.offsets_for_times({tp: max(0, ts - window_ms) for tp, ts in last.items()})
            for tp, end in ends.items():
                consumer.seek(tp, found[tp].offset if found.get(tp) else end - 1)

            def keep(tp: Any, rec: Any) -> None:
                for name, value in rec.headers or ():
                    if name == "id":
                        ids[tp.partition].add(value.decode())

            await _read_until(consumer, ends, keep)
        finally:
            await consumer.stop()
        for partition, found_ids in ids.items():
            if found_ids:
                self.guarded[partition] = found_ids
                log.info("partition %d: %d outputs already published will not be sent again", partition, len(found_ids))


async def _read_until(consumer: Any, ends: dict[Any, int], each: Callable[[Any, Any], None]) -> dict[Any, int]:
    """Read every partition of `ends` from its position to its end offset, calling `each(tp, record)`;
    returns the timestamp of the last record read of each."""
    last: dict[Any, int] = {}
    left = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while left:
        batch = await consumer.getmany(*left, timeout_ms=1000)
        if not batch:
            break
        for tp, records in batch.items():
            for rec in records:
                if rec.offset < ends[tp]:
                    each(tp, rec)
                    last[tp] = rec.timestamp
            if await consumer.position(tp) >= ends[tp]:
                left.discard(tp)
    return last


def _decode(records: Sequence[Record]) -> list[tuple[str, int, bytes | None, Any, Any]]:
    """(topic, partition, key, the event or the raw value, its event time, or the heartbeat, or the error)."""
    decoded: list[tuple[str, int, bytes | None, Any, Any]] = []
    for topic, partition, key, value in records:
        try:
            event, ts = codec.read_event(value)
            if key is None and event.get("event_type") == events.HEARTBEAT_EVENT_TYPE:
                # a bridge's heartbeat: (bridge, vouched, sent, interval) instead of a time
                decoded.append((topic, partition, key, event, heartbeat_of(event, ts)))
            else:
                decoded.append((topic, partition, key, event, ts))
        except (codec.CodecError, ValueError, KeyError, TypeError) as exc:
            decoded.append((topic, partition, key, value, exc))
    return decoded
