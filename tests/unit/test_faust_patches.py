"""The faust/aiokafka internals pipeline.streams.faust_patches relies on are still there, and the
patches still do their job. An upgrade of faust-streaming or aiokafka that removes, renames or
rewrites one of them fails here, loudly, naming it: re-read the patch before changing a pin."""
from __future__ import annotations

import asyncio
from importlib.metadata import version

import pytest

from pipeline.streams import faust_patches as fp
from pipeline.streams.faust_patches import drain


def test_the_pinned_versions_are_installed() -> None:
    assert (version("faust-streaming"), version("aiokafka")) == (fp.FAUST_VERSION, fp.AIOKAFKA_VERSION)


def test_every_private_name_a_patch_uses_exists(rt) -> None:
    assert fp.missing(consumer=rt.app.consumer) == []
    assert fp.missing() == []


def test_the_faust_code_the_patches_copy_is_unchanged() -> None:
    assert fp.source_drift() == [], "faust changed a method a patch copies or relies on: re-diff the patch"


def test_the_check_fails_on_an_object_lacking_a_patched_attribute() -> None:
    """Pointed at objects that lack what the patches need, the checks name them."""
    lacking = (("faust.transport.consumer:Consumer", "_drain_messages_renamed", "class"),
               ("faust.transport.consumer:Consumer", "_read_offset_renamed", "consumer"),
               ("faust.stores.rocksdb:Store", "_key_index_renamed", "store"),
               ("faust.transport.gone:Consumer", "_thread", "class"),
               ("faust.transport.consumer:Consumer", "_read_offset", "class"),  # set in __init__, not on the class
               ("faust.stores.rocksdb:Store", "on_recovery_completed", "class"))  # only base Store's no-op
    assert fp.missing(lacking) == [
        "faust.transport.consumer:Consumer._drain_messages_renamed",
        "faust.transport.consumer:Consumer._read_offset_renamed",
        "faust.stores.rocksdb:Store._key_index_renamed",
        "faust.transport.gone:Consumer (needed for _thread)",
        "faust.transport.consumer:Consumer._read_offset",
        "faust.stores.rocksdb:Store.on_recovery_completed",
    ]
    assert fp.source_drift({"faust.transport.consumer:Consumer._drain_messages": "0" * 64}) == [
        "faust.transport.consumer:Consumer._drain_messages"]


def test_a_commit_draws_its_offsets_table_only_when_the_debug_line_is_logged(rt, monkeypatch) -> None:
    """The worker's app applies the patch (rt): the table faust makes for each commit is drawn when a
    log record formats it, with what faust gave it, and not at all below debug level."""
    import logging

    from faust.transport import consumer as faust_consumer
    from faust.utils.terminal import tables

    drawn = []
    real = tables.table

    def counting(*args, **kwargs):
        drawn.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(tables, "table", counting)
    # what Consumer._commit_offsets does with it
    table = faust_consumer.terminal.logtable([("relay-0", "5")], title="Commit Offsets", headers=["TP", "Offset"])
    log = logging.getLogger("pipeline.test.commit")
    log.setLevel(logging.INFO)
    log.debug("COMMITTING OFFSETS:\n%s", table)
    assert drawn == []
    text = "%s" % table  # noqa: UP031 - as logging formats it
    assert len(drawn) == 1 and "Commit Offsets" in text and "relay-0" in text and "Offset" in text


async def test_a_commit_reads_the_assignment_once_and_commits_only_assigned_partitions(rt, monkeypatch) -> None:
    from aiokafka.structs import OffsetAndMetadata, TopicPartition
    from faust.types import TP

    thread = rt.app.consumer._thread
    assert thread._commit.__qualname__.startswith("commit_against_one_assignment")
    reads, committed = [], []

    class Kafka:
        async def commit(self, offsets):
            committed.append(offsets)

    def assignment():
        reads.append(1)
        return {TP("relay", p) for p in range(80)}

    monkeypatch.setattr(thread, "_ensure_consumer", lambda: Kafka())
    monkeypatch.setattr(thread, "assignment", assignment)
    offsets = {TP("relay", p): 10 + p for p in range(80)} | {TP("revoked", 0): 5}
    assert await thread._commit(offsets) is True
    assert len(reads) == 1
    assert committed == [{TopicPartition("relay", p): OffsetAndMetadata(10 + p, "") for p in range(80)}]
    assert set(thread.tp_last_committed_at) >= {TP("relay", p) for p in range(80)}
    assert TP("revoked", 0) not in thread.tp_last_committed_at


def test_the_consumer_faust_creates_drains_inline(rt) -> None:
    consumer = rt.app.consumer
    assert consumer._drain_messages.__func__ is drain._inline_drain  # our loop, bound to this consumer
    assert consumer._pipeline_rewinds_uncommitted


async def test_the_kafka_consumer_faust_creates_fetches_in_rounds_unless_told_not_to(rt) -> None:
    """By default a fetch is answered at 8 KB (the floor the traffic raises) or after 500 ms; with
    --fetch-min-kb 0 the consumer is faust's, answered as soon as one record is there."""
    import dataclasses
    import uuid

    from pipeline.streams.app import create_app

    kafka = rt.app.consumer._thread._create_worker_consumer(rt.app.transport)
    assert (kafka._fetch_min_bytes, kafka._fetch_max_wait_ms) == (8 * 1024, 500)
    assert kafka.start.__qualname__.startswith("pace_fetches")  # paced once started
    faust_s = create_app(dataclasses.replace(rt.settings, app_id=f"unit-{uuid.uuid4().hex[:8]}", fetch_min_kb=0), 1)
    faust_s.app.finalize()
    kafka = faust_s.app.consumer._thread._create_worker_consumer(faust_s.app.transport)
    assert (kafka._fetch_min_bytes, kafka._fetch_max_wait_ms) == (1, 1500)
    assert "pace_fetches" not in kafka.start.__qualname__
    fixed = create_app(dataclasses.replace(rt.settings, app_id=f"unit-{uuid.uuid4().hex[:8]}", fetch_round_ms=0), 1)
    fixed.app.finalize()
    kafka = fixed.app.consumer._thread._create_worker_consumer(fixed.app.transport)
    assert (kafka._fetch_min_bytes, kafka._fetch_max_wait_ms) == (8 * 1024, 500)
    assert "pace_fetches" not in kafka.start.__qualname__


def test_the_paced_min_bytes_follow_a_second_of_traffic() -> None:
    """A round's worth (40 ms) of the last second's bytes of events, within 8 KB and 1 MB, set once a
    second; the max wait 500 ms at the floor, 100 ms (2.5 rounds) above it; a second with no event
    (heartbeats, without a key, aside): the first record answers, else 1.5 s (faust's wait)."""
    from types import SimpleNamespace

    def records(n: int, size: int = 4000) -> dict:
        return {"tp": [SimpleNamespace(serialized_key_size=-1 if i % 2 else 16, serialized_value_size=size)
                       for i in range(n)]}

    fetcher = SimpleNamespace(_fetch_min_bytes=8192, _fetch_max_wait_ms=500)
    pacer = fp.FetchPacer(fetcher, 8192, 40, 500, now=0.0)
    pacer.received(records(500), now=0.5)  # 2 MB in half a second: counted, not applied yet
    assert fetcher._fetch_min_bytes == 8192
    pacer.received(records(500), now=1.0)  # 2 MB/s of events (+ their keys) -> 80 KB
    assert fetcher._fetch_min_bytes == int(500 * (4000 + 16) * 0.04)
    assert fetcher._fetch_max_wait_ms == 100
    pacer.received(records(20), now=2.0)  # 20/s: 3.2 KB a round, the floor
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (8192, 500)
    pacer.received(records(100_000), now=3.0)  # a backlog: the ceiling
    assert fetcher._fetch_min_bytes == fp.fetch.CEILING_BYTES
    pacer.received({}, now=3.5)
    pacer.received({}, now=4.0)  # idle: quiet at the next update
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, 1500)
    heartbeats = {"tp": [SimpleNamespace(serialized_key_size=-1, serialized_value_size=300) for _ in range(72)]}
    pacer.received(heartbeats, now=5.0)  # the bridges' heartbeats keep it quiet
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, 1500)
    pacer.received(records(2), now=6.0)  # one event: the floor again
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (8192, 500)


async def test_a_started_consumer_counts_what_its_fetcher_hands_over() -> None:
    """pace_fetches wraps the fetcher aiokafka's start creates; records pass through unchanged."""
    from types import SimpleNamespace

    handed = {"tp": [SimpleNamespace(serialized_key_size=0, serialized_value_size=100)]}

    class Fetcher:
        _fetch_min_bytes = 1

        async def fetched_records(self, partitions, timeout=0, max_records=None):
            return handed

    class Kafka:
        _fetcher = None

        async def start(self) -> None:
            self._fetcher = Fetcher()

    kafka = Kafka()
    fp.pace_fetches(kafka, 8192, 40, 500)
    await kafka.start()
    assert await kafka._fetcher.fetched_records(set(), timeout=0.1, max_records=10) is handed
    assert kafka._fetcher._pipeline_pacer.received_bytes == 100


async def test_a_callback_that_blocks_is_resumed_not_restarted() -> None:
    """The inline drain's fallback: a coroutine driven to its first suspension and handed to a
    task continues where it stopped, and gets cancellation."""
    steps: list[str] = []
    gate: asyncio.Future = asyncio.get_running_loop().create_future()

    async def callback() -> str:
        steps.append("before")
        await gate
        steps.append("after")
        return "done"

    coro = callback()
    pending = coro.send(None)
    task = asyncio.ensure_future(drain._Resume(coro, pending))
    await asyncio.sleep(0)
    gate.set_result(None)
    assert await task == "done"
    assert steps == ["before", "after"]

    blocked: asyncio.Future = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        try:
            await blocked
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    coro = waits()
    task = asyncio.ensure_future(drain._Resume(coro, coro.send(None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps[-1] == "cancelled"


def test_the_lean_monitor_keeps_what_is_read_back() -> None:
    from faust.types import TP
    from prometheus_client import CollectorRegistry

    class App:
        monitor = None

    app = App()
    fp.install_lean_monitor(app, CollectorRegistry())
    tp = TP("t", 0)
    app.monitor.on_message_in(tp, 41, object())
    app.monitor.on_stream_event_in(tp, 41, object(), object())
    app.monitor.track_tp_end_offset(tp, 50)
    assert app.monitor.tp_read_offsets[tp] == 41  # pipeline.web.metrics.consumer_lag
    assert tp in app.monitor.stream_inbound_time  # faust's livelock log
    assert app.monitor.tp_end_offsets[tp] == 50
    assert app.monitor.events_total == 0  # the per-event counting is what it drops


@pytest.mark.parametrize(("key", "value"), [(b"k", b"\xc3\x01v"), (None, b"v"), (b"k", None), (b"", b"")])
async def test_the_relay_topics_events_are_the_ones_faust_would_make(rt, key, value) -> None:
    """faust_patches.decode: the source topic's decode gives what faust's own raw-bytes schema gives."""
    import faust
    from faust.types import TP, Message

    message = Message("notifications.baremetal.node", 0, 7, 0.0, 0, [("h", b"1")], key, value, None, tp=TP(
        "notifications.baremetal.node", 0))
    ours = await rt.source.decode(message, propagate=True)
    faust_schema = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    theirs = await faust_schema.compile(rt.app)(message, propagate=True)
    assert type(rt.source.schema).__name__ == "RawBytesSchema"
    assert type(ours) is type(theirs)
    assert (ours.key, ours.value, ours.headers, ours.message, ours.app) == (
        theirs.key, theirs.value, theirs.headers, theirs.message, theirs.app)


def test_every_table_partition_s_database_shares_one_memory_budget(tmp_path) -> None:
    """The memtables of all the worker's databases are charged to one cache and flushed at a
    quarter of it: states rewritten 20,000 times (20 MB) across four databases leave the budget's
    usage under its 8 MB. Without the patch nothing is charged to it (faust gives every database a
    cache of its own)."""
    import uuid

    from pipeline.streams.app import WorkerSettings, create_app

    settings = WorkerSettings(app_id=f"unit-{uuid.uuid4().hex[:8]}", store="rocksdb://", data_dir=str(tmp_path),
                              web_enabled=False, replay_guard_s=0.0, rocksdb_memory_mb=8)
    rt = create_app(settings, partitions=2)
    rt.app.finalize()
    memory = rt.rocksdb_memory
    dbs = [table.data._db_for_partition(p) for table in (rt.resources, rt.loss) for p in (0, 1)]
    value = bytes(range(250)) * 4
    for i in range(20_000):
        dbs[i % 4].put(b"node-%d" % (i % 500), value)
    assert 0 < memory.usage() <= memory.capacity  # charged to the shared cache: the four share it
    assert len(list(tmp_path.rglob("*.sst"))) >= 2  # flushed, not held
    assert dbs[0].get(b"node-0") == value
