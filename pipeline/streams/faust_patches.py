"""Every place the worker reaches into faust-streaming's or aiokafka's private internals.

Written against faust-streaming 0.15.3 and aiokafka 0.14.0 exactly (pyproject.toml pins them).
Each patch is one named function whose docstring says what goes wrong without it, where upstream
stands, and when it can go. `REQUIRED` lists every private name the patches touch, and
`PATCHED_SOURCES` the hash of each faust method a patch copies; tests/unit/test_faust_patches.py
fails when an upgrade removes, renames or rewrites one of them. Nothing outside this module may use
a private faust or aiokafka name.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Generator
from time import monotonic
from typing import Any, cast

__all__ = [
    "PATCHED_SOURCES",
    "REQUIRED",
    "LeanMonitor",  # noqa: F822 - made on first use by the module's __getattr__
    "PartitionStore",
    "aiokafka_producer",
    "crashed",
    "flush_first",
    "hold_flow_for_seek",
    "install_lean_monitor",
    "missing",
    "patch_new_consumers",
    "repair_acked_offsets",
    "rewind_uncommitted_on_seek",
    "source_drift",
    "use_inline_drain",
]

log = logging.getLogger("pipeline.worker")

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"


# --- installing patches on the consumer faust creates ---------------------------------------------

def patch_new_consumers(app: Any, *patches: Callable[[Any], None]) -> None:
    """Apply `patches` to the consumer as soon as faust creates it (`App._new_consumer`).

    Why: faust's fetcher looks `Consumer._drain_messages` up when the drain loop starts, so an
    override must be on the consumer before that; the end-of-rebalance signal comes too late and
    creating `app.consumer` early binds it before the worker's event loop is set up.
    Can go: with the patches it applies.
    """
    original = app._new_consumer

    def new_consumer() -> Any:
        consumer = original()
        for patch in patches:
            patch(consumer)
        return consumer

    app._new_consumer = new_consumer


# --- 1. the drain loop: run the callback inline ---------------------------------------------------

class _Resume:
    """Awaitable that continues a coroutine already driven to its first suspension.

    Hands the future the coroutine is blocked on to the awaiting task, then keeps sending and
    throwing into the coroutine as a task would (cancellation included)."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Any, pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        pending = self.pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # noqa: BLE001 - cancellation goes to the coroutine
                try:
                    pending = self.coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = self.coro.send(sent)
            except StopIteration as stop:
                return stop.value


def use_inline_drain(consumer: Any) -> None:
    """Replace faust's `Consumer._drain_messages` by a copy that calls the callback inline.

    Symptom: faust awaits `wait_first(callback(message), suspend_flow.wait())` for every record
    (faust/transport/consumer.py:1220-1222): four tasks, `asyncio.wait` and three cancels, 50-60 µs
    per record, which capped a do-nothing agent at 3-5k records/s on this machine (14k/s inline).
    The race came with faust-streaming #223 (v0.6.13); #229 reported a deadlock at this call; no
    upstream issue measures its cost. Here the callback runs inline until it would block (queue
    full: back-pressure) and only then falls back to faust's race, with the coroutine resumed
    rather than restarted; while the flow is suspended (rebalance) every record takes faust's own
    path. Read offsets, gaps and commits are faust's code unchanged.
    Can go: when upstream stops racing two tasks per message; re-diff the copy on every upgrade
    (`PATCHED_SOURCES`).
    """
    from faust.transport.consumer import CONSUMER_FETCHING
    from mode import Service

    self = consumer

    async def _drain_messages(fetcher: Any) -> None:
        # faust 0.15.3's loop; the only change is the callback call (marked below)
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        suspended = self.suspend_flow.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            # --- changed: inline first, faust's race only if it would block
                            if suspended():
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                coro = callback(message)
                                try:
                                    pending = coro.send(None)
                                except StopIteration:
                                    pass
                                else:
                                    await self.wait_first(_Resume(coro, pending), self.suspend_flow.wait())
                            # --- end of change
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    consumer._drain_messages = _drain_messages


# --- 2. a lean monitor ----------------------------------------------------------------------------

def _lean_monitor_class() -> type:
    from faust.sensors.prometheus import PrometheusMonitor

    class LeanMonitor(PrometheusMonitor):
        """faust's PrometheusMonitor without its per-event work.

        Symptom: PrometheusMonitor's per-message and per-event hooks (counters, gauges with labels,
        latency histograms, table get/set counters) cost about 40 µs per event
        (faust/sensors/prometheus.py:387-462 on top of monitor.py:445-530). Kept: what something
        reads back: `tp_read_offsets` (pipeline.web.metrics.consumer_lag), `stream_inbound_time`
        (faust's "stream stopped processing" livelock log, drivers/aiokafka.py:859) and
        `tp_end_offsets`; commit, rebalance, send and web metrics stay faust's. The pipeline counts
        its own events (`Metrics`, `Recent`).
        Can go: if faust's monitor gets cheap per-event hooks (no upstream issue).
        """

        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            self.tp_read_offsets[tp] = offset

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            self.stream_inbound_time[tp] = monotonic()

        def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
            pass

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            pass

        def on_table_get(self, table: Any, key: Any) -> None:
            pass

        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            pass

        def on_table_del(self, table: Any, key: Any) -> None:
            pass

        def track_tp_end_offset(self, tp: Any, offset: int) -> None:
            self.tp_end_offsets[tp] = offset

    return LeanMonitor


def __getattr__(name: str) -> Any:  # LeanMonitor without importing faust's sensors at import time
    if name == "LeanMonitor":
        return _lean_monitor_class()
    raise AttributeError(name)


def install_lean_monitor(app: Any, registry: Any) -> None:
    """`app.monitor` = a `LeanMonitor` writing faust's remaining metrics into `registry`."""
    from faust.sensors.prometheus import FaustMetrics

    app.monitor = _lean_monitor_class()(metrics=FaustMetrics.create(registry, "faust"))


# --- 3. the end-of-recovery seek ------------------------------------------------------------------

async def hold_flow_for_seek(app: Any) -> None:
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
    position the seek sets (`rewind_uncommitted_on_seek` makes that true for every partition).
    Upstream: faust-streaming 0.15.3, no issue filed. Can go: when faust stops the flow for its seek.
    """
    app.consumer.stop_flow()
    app.flow_control.suspend()
    await asyncio.sleep(0)  # let the drain loop see the suspension before the seek starts


def rewind_uncommitted_on_seek(consumer: Any, sources: Collection[str]) -> None:
    """Make faust's "seek to committed" also rewind relay partitions that have no committed offset.

    Symptom: faust discards what the fetcher returns while its flow is stopped (or for a partition
    it has just paused) and relies on `perform_seek` to fetch it again (faust/transport/
    consumer.py:766-772). aiokafka's `seek_to_committed` skips partitions without a committed
    offset (aiokafka/consumer/consumer.py:901), so for those the position stays past records nobody
    processed: they are never read and never committed, and the group's lag stays above zero (seen
    in tests/faults: a restart before the first commit of a small topic). Such a partition goes
    back to its beginning, where `auto_offset_reset=earliest` started it; what it re-reads is
    dropped by the dedup. Upstream: the seek race is in faust-streaming 0.15.3, no issue filed.
    Can go: when faust re-fetches discarded records itself.
    """
    from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

    if getattr(consumer, "_pipeline_rewinds_uncommitted", False):
        return
    original = consumer.perform_seek

    async def perform_seek() -> None:
        await original()
        fresh = [tp for tp in consumer.assignment()
                 if tp.topic in sources and not consumer._read_offset.get(tp)]
        if fresh:
            log.info("%d relay partitions without a committed offset: read from their beginning", len(fresh))
            await consumer._thread.seek_to_beginning(*(ensure_aiokafka_TP(tp) for tp in fresh))

    consumer.perform_seek = perform_seek
    consumer._pipeline_rewinds_uncommitted = True


# --- 4. faust-streaming#596 and its kin: acked offsets that cannot be committed -------------------

def repair_acked_offsets(consumer: Any, sources: Collection[str], stalls: dict[Any, tuple[int, int]]) -> list[tuple[Any, int, int]]:
    """Keep faust's acked offsets committable; returns the (tp, committed, head) to read again.

    Symptom: faust commits, per partition, the first run of consecutive offsets in
    `Consumer._acked[tp]` that starts at the committed offset (`Consumer._new_offset`). Two states
    of that list stop the committed offset although the agent has read the records, and the group's
    lag then never reaches zero:

    * an offset listed twice: the run ends at the first duplicate, so each commit advances by about
      one record (left by the recovery-seek race the worker prevents by holding the flow; should it
      happen anyway the list is reduced to distinct offsets, as `Consumer.ack` keeps it with
      `_acked_index`, and a warning says so);
    * a hole at the head: faust marked records as read that never reached the agent, so they are
      never acked (faust-streaming#596, open in 0.15.3). A partition showing the same hole on two
      checks in a row is returned, to be read again from the committed offset.

    Can go: when #596 is fixed and `_new_offset` tolerates duplicates.
    """
    reread = []
    for tp, acked in list(getattr(consumer, "_acked", {}).items()):
        committed = consumer._committed_offset.get(tp)
        if not acked or committed is None or tp.topic not in sources:
            stalls.pop(tp, None)
            continue
        distinct = set(acked)
        if len(distinct) < len(acked):
            # no await between reading and rewriting: faust's commit (same loop) sees either
            log.warning("%s[%d]: %d acked offsets were listed twice, which lets faust commit one "
                        "record at a time; keeping each once", tp.topic, tp.partition, len(acked) - len(distinct))
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
        reread.append((tp, committed, head))
    return reread


# --- 5. the producer: direct sends, and the changelog released before faust's commit --------------

def aiokafka_producer(app: Any) -> Any:
    """The aiokafka producer under faust's `app.producer` (the one faust flushes on commit).

    Why: faust's `send_soon` path (ProducerBuffer) drains one record per event-loop turn and topped
    out near 2,500 records/s here; the worker sends its outputs and changelog records on the same
    aiokafka producer directly, so faust's commit-time flush still covers them.
    Can go: if faust's buffer gets batch sends.
    """
    return app.producer._ensure_producer()


def flush_first(producer: Any, before: Callable[[], Awaitable[None]]) -> None:
    """Run `before` at the start of every `producer.flush()` faust calls (commit and shutdown).

    Why: faust's commit flushes the producer and then commits the acked offsets
    (faust/transport/consumer.py:1097-1151); the worker holds each changelog record until the
    outputs of its events are acknowledged, and those held records must reach the producer before
    that flush, or a committed offset would not mean "state and outputs are in Kafka". faust has no
    hook there. Can go: if faust gets a pre-commit hook.
    """
    original = producer.flush

    async def flush() -> None:
        await before()
        await original()

    producer.flush = flush


# --- 6. table stores by partition -----------------------------------------------------------------

class PartitionStore:
    """Reads and writes of a faust table's store for an explicit partition.

    Why: faust's stores take the partition from `current_event()` (faust/stores/rocksdb.py:474-506),
    which is None in a batch body (`Stream.take_events` fills its buffer from another task); without
    it a RocksDB read tries every partition's database, and a write raises. The writes are what
    `Store._set` does (the partition's database, the key index), the changelog records are sent by
    the worker itself (see `aiokafka_producer`). Can go: if faust's stores accept a partition.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.store = table.data
        self.rocksdb = hasattr(self.store, "_db_for_partition")

    def get(self, partition: int, key: bytes) -> bytes | None:
        if self.rocksdb:
            return self.store._db_for_partition(partition).get(key)
        return self.store.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        if self.rocksdb:
            self.store._db_for_partition(partition).put(key, value)
            self.store._key_index[key] = partition
        else:
            self.store.data[key] = value

    def items(self) -> Any:
        return self.table.items()

    def on_changelog_sent(self, fut: Any) -> None:
        """The RocksDB offset bookkeeping of `Table._on_changelog_sent`."""
        if fut.cancelled() or fut.exception() is not None:
            return
        meta = fut.result()
        self.store.set_persisted_offset(meta.topic_partition, meta.offset)


# --- 7. the worker's exit ------------------------------------------------------------------------

def crashed(app: Any) -> bool:
    """Whether faust stopped the app because of an error (mode's `Service._crashed`).

    Why: `Worker.execute_from_commandline` exits 0 after a crash too, and a RocksDB table left by a
    crashed worker must be rebuilt from its changelog (command.py); mode has no public flag for it.
    Can go: if mode exposes one.
    """
    return app._crashed.is_set()


# --- what the patches rely on ---------------------------------------------------------------------

# (importable owner, attribute, how to find it): "class" = on the class; "consumer" = on a consumer
# instance faust created (set in __init__); "store" = on a rocksdb store class
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("faust.app.base:App", "_new_consumer", "class"),
    ("faust.transport.consumer:Consumer", "_drain_messages", "class"),
    ("faust.transport.consumer:Consumer", "_add_gap", "class"),
    ("faust.transport.consumer:Consumer", "perform_seek", "class"),
    ("faust.transport.consumer:Consumer", "_read_offset", "consumer"),
    ("faust.transport.consumer:Consumer", "_commit_every", "consumer"),
    ("faust.transport.consumer:Consumer", "_n_acked", "consumer"),
    ("faust.transport.consumer:Consumer", "_acked", "consumer"),
    ("faust.transport.consumer:Consumer", "_acked_index", "consumer"),
    ("faust.transport.consumer:Consumer", "_committed_offset", "consumer"),
    ("faust.transport.consumer:Consumer", "suspend_flow", "consumer"),
    ("faust.transport.consumer:Consumer", "diag", "consumer"),
    ("faust.transport.consumer:Consumer", "consumer_stopped_errors", "consumer"),
    ("faust.transport.drivers.aiokafka:Consumer", "_thread", "consumer"),
    ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "seek_to_beginning", "class"),
    ("faust.transport.drivers.aiokafka:Producer", "_ensure_producer", "class"),
    ("faust.transport.drivers.aiokafka:Producer", "flush", "class"),
    ("faust.transport.consumer:CONSUMER_FETCHING", "", "module"),
    ("faust.transport.drivers.aiokafka:ensure_aiokafka_TP", "", "module"),
    ("faust.stores.rocksdb:Store", "_db_for_partition", "class"),
    ("faust.stores.rocksdb:Store", "_key_index", "store"),
    ("faust.stores.rocksdb:Store", "set_persisted_offset", "class"),
    ("faust.sensors.monitor:Monitor", "tp_read_offsets", "class"),
    ("faust.sensors.monitor:Monitor", "tp_end_offsets", "class"),
    ("faust.sensors.monitor:Monitor", "stream_inbound_time", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_message_in", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_stream_event_in", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_stream_event_out", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "on_message_out", "class"),
    ("faust.sensors.prometheus:PrometheusMonitor", "track_tp_end_offset", "class"),
    ("faust.sensors.prometheus:FaustMetrics", "create", "class"),
    ("aiokafka.consumer.consumer:AIOKafkaConsumer", "seek_to_beginning", "class"),
    ("mode.services:Service", "_crashed", "consumer"),
    ("aiokafka.producer.producer:AIOKafkaProducer", "send", "class"),
)

# faust methods a patch copies or wraps, with the sha256 of their source as of FAUST_VERSION:
# a change upstream means the copy must be re-diffed
PATCHED_SOURCES: dict[str, str] = {
    "faust.transport.consumer:Consumer._drain_messages":
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    "faust.app.base:App._new_consumer":
        "bff6ccd646b71ea99a7e7a7d1c62adbf3d34432a0b42a39e6f60b4c0307d89c8",
    "faust.stores.rocksdb:Store._set":
        "4227e561e288d9413bf663a3a67940fd4976f5484e70e49445858ce4d400d26e",
    "faust.stores.rocksdb:Store._get":
        "7ae8dfd6d7754a5952ae162d4d5cf0d51a8a020ed730a4a7c7dc7f7c84e73fb8",
}


def resolve(path: str) -> Any:
    import importlib

    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, name.split(".")):
        obj = getattr(obj, part)
    return obj


def _instance_has(cls: type, name: str) -> bool:
    """Whether `cls.__init__` (or a base's) assigns `self.<name>`: instance attributes made there."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            if f"self.{name} =" in inspect.getsource(init) or f"self.{name}:" in inspect.getsource(init):
                return True
        except (OSError, TypeError):
            continue
    return hasattr(cls, name)


def missing(required: tuple[tuple[str, str, str], ...] = REQUIRED, consumer: Any = None) -> list[str]:
    """Which of `required` cannot be found (empty: every patch has what it relies on).

    `consumer`: a consumer instance faust created, for the attributes its __init__ sets."""
    out = []
    for owner, attribute, how in required:
        try:
            obj = resolve(owner)
        except (ImportError, AttributeError):
            out.append(f"{owner} (needed for {attribute or 'itself'})")
            continue
        if how == "module":
            continue
        if how == "consumer" and consumer is not None:
            found = hasattr(consumer, attribute)
        elif how in ("consumer", "store"):
            found = _instance_has(obj, attribute)
        else:
            found = hasattr(obj, attribute)
        if not found:
            out.append(f"{owner}.{attribute}")
    return out


def source_hash(path: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(path)).encode()).hexdigest()


def source_drift(expected: dict[str, str] = PATCHED_SOURCES) -> list[str]:
    """Patched faust methods whose source is not the one the patch was written against."""
    return [path for path, digest in expected.items() if source_hash(path) != digest]
