"""The faust app, its tables and output topics: the shell around the pure state machine.

Tables (both keyed and partitioned exactly like the relay topics; values are orjson documents that
`state` decodes):

* ``resources`` — key: resource UUID as the raw UTF-8 bytes the bridge writes (so ``table_route``
  hashes like the topic); value: the resource's state record (dedup memory, open operations,
  terminal events waiting for their start, and for nodes the node state). See `operations`.
* ``loss`` — key: ``b"<partition>|<publisher>|<operation>"`` (one row per source partition, so
  each changelog partition is complete on its own); value: counts ``started, ended, errors,
  missing, late, orphaned, superseded``. Sum the rows over partitions for a publisher's totals.

Process-local, not durable (rebuilt from traffic after a restart): `Metrics` (counters for
/metrics) and the `Reporter` the agent tells what it published: the web views' `Observations`, or
`Recent` (last alerts, recent durations per operation) when the worker runs without them.
"""
from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import faust

from . import faust_patches
from .settings import WorkerSettings
from .topics import LOSS_TABLE, RESOURCES_TABLE

__all__ = ["Metrics", "Recent", "Reporter", "Runtime", "WorkerSettings", "create_app"]

log = logging.getLogger("pipeline.worker")

COUNTS = ("started", "ended", "errors", "missing", "late", "orphaned", "superseded")


@dataclass(slots=True)
class Metrics:
    events: int = 0  # relay records read
    first_at: float = 0.0  # monotonic clock at the first record (rate = events / (last_at - first_at))
    last_at: float = 0.0
    cpu_first: float = 0.0  # process CPU seconds at the first batch and after the last one
    cpu_last: float = 0.0
    processed: int = 0  # new events folded into state
    duplicates: int = 0
    beyond_horizon: int = 0  # older than the dedup memory: counted, not processed
    undecodable: int = 0  # sent to the dead-letter topic
    unkeyed: int = 0  # no resource UUID: nothing to pair or track
    reread: int = 0  # records read again after the consumer skipped them (see agents._commit_watch)
    replay_suppressed: int = 0  # outputs a killed predecessor had already published
    outputs: collections.Counter = field(default_factory=collections.Counter)  # kind -> count
    alerts: collections.Counter = field(default_factory=collections.Counter)  # alert kind -> count
    heartbeats: int = 0  # the bridges' heartbeat records read
    watermarks: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> watermark (µs)


class Reporter(Protocol):
    """What the agent tells whoever shows its work (the web views' `Observations`): every event it
    processed, every operation and alert record it published, every record it dead-lettered."""

    def event(self, event_type: str) -> None: ...

    def operation(self, record: dict) -> None: ...

    def alert(self, record: dict) -> None: ...

    def deadletter(self) -> None: ...


class Recent:
    """The last alerts and durations seen by this process: the reporter of a worker without web views."""

    def __init__(self, alerts: int = 1000, durations: int = 4096) -> None:
        self.alerts: collections.deque[dict] = collections.deque(maxlen=alerts)
        self._durations_len = durations
        self.durations: dict[str, collections.deque[int]] = {}  # operation -> duration_ms
        self.totals: dict[str, list[int]] = {}  # operation -> [count, errors]
        self.events_by_type: dict[str, int] = {}
        self.deadletters = 0

    def operation(self, rec: dict) -> None:
        op = rec["operation"]
        total = self.totals.setdefault(op, [0, 0])
        total[0] += 1
        if rec["outcome"] == "error":
            total[1] += 1
        if rec["duration_ms"] is not None:
            dq = self.durations.get(op)
            if dq is None:
                dq = self.durations[op] = collections.deque(maxlen=self._durations_len)
            dq.append(rec["duration_ms"])

    def alert(self, rec: dict) -> None:
        self.alerts.append(rec)

    def event(self, event_type: str) -> None:
        self.events_by_type[event_type] = self.events_by_type.get(event_type, 0) + 1

    def deadletter(self) -> None:
        self.deadletters += 1


class Runtime:
    """Everything the agent and the web views share; one per worker process."""

    def __init__(self, settings: WorkerSettings, app: faust.App, partitions: int, reporter: Reporter | None = None) -> None:
        self.settings = settings
        self.app = app
        self.partitions = partitions
        self.topic_names = settings.topics
        options = None
        if settings.store.startswith("rocksdb"):
            options = {  # the cache and the memtables' sizes are the worker's budget's (agents.install)
                "max_write_buffer_number": 2,
            }
        self.resources = app.Table(
            RESOURCES_TABLE, key_type=bytes, value_type=bytes, partitions=partitions, options=options,
            help="resource UUID -> dedup memory, open operations, node state",
        )
        self.loss = app.Table(
            LOSS_TABLE, key_type=bytes, value_type=bytes, partitions=partitions, options=options,
            help="partition|publisher|operation -> operation counts",
        )
        self.source = app.topic(  # raw bytes keys and values, decoded by nobody (faust_patches.decode)
            *self.topic_names.sources, schema=faust_patches.raw_bytes_schema(), key_type=bytes, value_type=bytes,
            key_serializer="raw", value_serializer="raw", partitions=partitions,
        )
        self.outputs: Mapping[str, faust.TopicT] = {
            kind: app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                            value_serializer="raw", partitions=partitions)
            for kind, name in (("operation", self.topic_names.operations),
                               ("node_state", self.topic_names.node_state),
                               ("alert", self.topic_names.alerts))
        }
        self.deadletter = app.topic(self.topic_names.deadletter, key_type=bytes, value_type=bytes,
                                    key_serializer="raw", value_serializer="raw")
        self.metrics = Metrics()
        self.reporter: Reporter = reporter if reporter is not None else Recent()
        self.ready = False  # tables recovered and the watchdog rebuilt at least once
        self.processor: Any = None  # agents.Processor, set by agents.install
        self.rocksdb_memory: Any = None  # faust_patches.RocksDBMemory of a rocksdb:// worker, set by agents.install


def _credentials(kafka: Mapping[str, Any]) -> Any:
    protocol = kafka.get("security_protocol", "PLAINTEXT")
    if protocol == "SSL":
        return faust.SSLCredentials(kafka["ssl_context"])
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=kafka["sasl_plain_username"], password=kafka["sasl_plain_password"],
            mechanism=kafka["sasl_mechanism"], ssl_context=kafka.get("ssl_context"),
        )
    return None


def create_app(settings: WorkerSettings, partitions: int, reporter: Reporter | None = None) -> Runtime:
    """A faust app with the worker's tables, topics and agent; `partitions` as `topics.ensure` found;
    the agent reports to `reporter` (a `Recent` when None)."""
    data_dir = Path(settings.data_dir) / settings.app_id  # apps must not share RocksDB files
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{s}" for s in settings.bootstrap_servers],
        broker_credentials=_credentials(settings.kafka),
        store=settings.store,
        datadir=str(data_dir),
        topic_partitions=partitions,
        topic_replication_factor=settings.replication,
        # topics.ensure has created every topic the worker uses, faust's own included, and waited for
        # their leaders; faust's declarations would ask again, one admin round trip per topic (about
        # a second of every start)
        topic_allow_declare=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=16384,
        # the consumer thread fetches a partition again only once its previous fetch is handed over,
        # and under load its reply waits for the GIL: with faust's 1 MB (about 2,400 relay records
        # over 6 partitions) the channel ran dry between two fetches, and in some runs the agent
        # idled a quarter of the time; 4 MB (about 11,000) covers the wait (docs/performance.md)
        consumer_max_fetch_size=settings.fetch_partition_mb * 1024 * 1024,
        # faust awaits a count-triggered commit inside its fetch loop, so fetching stops for the
        # flush and the commit; at 10k records/s 10,000 meant one such stall a second. The 2.8 s
        # timer commits anyway; this only bounds the replay after a crash
        broker_commit_every=100_000,
        producer_linger=0.005,
        producer_max_batch_size=262144,
        web_enabled=settings.web_enabled,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_tables_enabled=False,
        # an assignment made while the metadata did not yet show a topic leaves it out ("Ignoring
        # missing topic") until the group leader's next metadata refresh notices it and rejoins:
        # faust's 5 minutes, here half a minute (a metadata request of the subscribed topics)
        consumer_metadata_max_age_ms=30_000,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_group_instance_id=settings.group_instance_id,  # /table would dump raw state; the web views are the interface
        autodiscover=False,
    )
    rt = Runtime(settings, app, partitions, reporter)
    from . import agents

    agents.install(rt)
    return rt
