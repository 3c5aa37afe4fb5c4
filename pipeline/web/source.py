"""The seam between the stream agents and the web views: reading the worker's tables
(`pipeline.streams.state`) for this worker's active partitions only, and the `install` the worker calls.

A faust table iterates what this process holds, which with `memory://` includes standby copies of
other workers' partitions; every record knows its partition (`p` in a resource record, the prefix of
a loss key), so the views keep only the partitions this worker is active for, and a fleet view that
merges the workers' answers counts every node once.

Scanning a large table on every request would compete with the agent for the event loop, so a scan
decodes only the records that changed since the last one, yields to the agents as it goes, and is
shared by the requests of `scan_cache_s` seconds (the dashboard refreshes every 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable, Mapping
from time import monotonic
from typing import Any

import orjson

from pipeline.config import ConfigError, env, env_float, secret
from pipeline.web.observe import Observations
from pipeline.web.views import WebSource, WebViews, register


def _seconds(name: str, default: float) -> float:
    value = env_float(name, default)
    if not value > 0:
        raise ConfigError(f"{name}={env(name)!r} is not a positive number of seconds")
    return value


def add_web_args(parser: argparse.ArgumentParser) -> None:
    """The web views' own settings (--web-host/--web-port/--web-bind are the worker's)."""
    group = parser.add_argument_group("web views")
    group.add_argument(
        "--stats-window",
        type=float,
        default=_seconds("STATS_WINDOW_S", 900.0),
        help="seconds of event time /api/operations/stats covers (env STATS_WINDOW_S; default %(default)s)",
    )
    group.add_argument(
        "--stats-slice",
        type=float,
        default=_seconds("STATS_SLICE_S", 60.0),
        help="granularity of that window in seconds (env STATS_SLICE_S; default %(default)s)",
    )
    group.add_argument(
        "--web-scan-cache",
        type=float,
        default=_seconds("WEB_SCAN_CACHE_S", 2.0),
        help="seconds one scan of the node table serves fleet views (env WEB_SCAN_CACHE_S; default %(default)s)",
    )


class _Entry:
    """What the views need of one resource record: a few fields, decoded once per change of it.
    The record itself is not kept (a hash tells whether it changed), so the index costs about 200
    bytes per node, not a copy of the table."""

    __slots__ = ("digest", "partition", "uuid", "power", "provision", "maintenance", "stuck", "ops")

    def __init__(self, uuid: str, raw: bytes, digest: int) -> None:
        from pipeline.streams import nodes, state

        st = orjson.loads(raw)
        self.digest = digest
        self.partition: int = st.get("p", 0)
        self.uuid: str | None = None
        node = st.get("node")
        if node is not None:
            fields = node["f"]
            self.uuid = uuid
            self.power = fields.get("power_state")
            self.provision = fields.get("provision_state")
            self.maintenance = fields.get("maintenance")
            # stuck: a stuck_state alert was raised for the transitional state the node is still in
            since = nodes.in_transition_since(node)
            self.stuck = since is not None and node.get("x") == since
        self.ops: list[dict] | None = (
            [state.as_json(op) for op in state.open_operations(uuid, raw)] if st.get("ops") else None
        )

    def light(self) -> dict:
        return {"uuid": self.uuid, "power_state": self.power, "provision_state": self.provision,
                "maintenance": self.maintenance, "stuck": self.stuck}


class TableIndex:
    """The resources table as the views read it. A rescan compares each record's hash with the one
    decoded last time, so 100,000 unchanged nodes cost a pass of hashing, not of JSON parsing; it
    yields to the agents every few thousand records, and one scan serves the requests of `ttl_s`."""

    CHUNK = 2000

    def __init__(self, app: Any, table: Any, ttl_s: float) -> None:
        self.app = app
        self.table = table
        self.changelog = table.changelog_topic.get_topic_name()
        self.ttl_s = ttl_s
        self.entries: dict[bytes, _Entry] = {}
        self.active: list[_Entry] = []
        self.at: float | None = None
        self._lock = asyncio.Lock()
        try:
            # a dict (memory://) must be copied before yielding mid-scan; a RocksDB iterator need not
            self.snapshot = str(app.conf.store).startswith("memory")
        except Exception:
            self.snapshot = True

    def fresh(self) -> bool:
        return self.at is not None and monotonic() - self.at < self.ttl_s

    async def refresh(self) -> None:
        if self.fresh():
            return
        async with self._lock:
            if self.fresh():
                return
            await self._scan()

    async def _scan(self) -> None:
        mine = active_partitions(self.app, self.changelog)
        entries, seen = self.entries, {}
        items = list(self.table.items()) if self.snapshot else self.table.items()
        for count, (key, raw) in enumerate(items, 1):
            digest = hash(raw)
            entry = entries.get(key)
            if entry is None or entry.digest != digest:
                entry = _Entry(key.decode(), raw, digest)
            seen[key] = entry
            if count % self.CHUNK == 0:
                await asyncio.sleep(0)
        self.entries = seen
        self.active = [e for e in seen.values() if e.partition in mine]
        self.at = monotonic()

    def nodes(self) -> list[dict]:
        return [e.light() for e in self.active if e.uuid is not None]

    def open_operations(self) -> list[dict]:
        return [op for e in self.active if e.ops for op in e.ops]


def active_partitions(app: Any, changelog_topic: str) -> set[int]:
    try:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog_topic}
    except Exception:
        return set()


def newest_events(app: Any, processor: Any) -> Mapping[str, float]:
    """Per relay topic, the newest event time this worker read on the partitions it owns now (the
    watchdog's per-lane clocks, read at scrape time)."""
    from pipeline.web.metrics import newest_event_seconds

    watchdog = getattr(processor, "watchdog", None)
    if watchdog is None:
        return {}
    try:
        active = {(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()}
    except Exception:  # before the first assignment
        return {}
    return newest_event_seconds(dict(watchdog.newest), active)


def source_from_runtime(rt: Any, scan_cache_s: float = 2.0) -> WebSource:
    """A WebSource over the stream agents' `Runtime` (pipeline.streams.app)."""
    from pipeline.streams import state

    app = rt.app
    resources, loss = rt.resources, rt.loss
    loss_changelog = loss.changelog_topic.get_topic_name()
    index = TableIndex(app, resources, scan_cache_s)

    def node(uuid: str) -> dict | None:
        raw = resources.get(uuid.encode())
        record = state.node_state(uuid, raw)
        if record is None:
            return None
        return state.as_json({"uuid": uuid, **record, "open_operations": state.open_operations(uuid, raw)})

    def expand(light: dict) -> dict:
        """The full node-state record of a node a fleet view returns (read again: the index keeps
        only the fields it filters on)."""
        record = state.node_state(light["uuid"], resources.get(light["uuid"].encode()))
        return light if record is None else state.as_json({"uuid": light["uuid"], **record})

    def loss_by_publisher() -> Mapping[str, Mapping[str, float]]:
        mine = active_partitions(app, loss_changelog)
        rows = [(k, v) for k, v in list(loss.items()) if int(k.split(b"|", 1)[0]) in mine]
        totals: dict[str, dict[str, float]] = {}
        for (publisher, _operation), counts in state.loss_totals(rows).items():
            row = totals.setdefault(publisher, {})
            for what, n in counts.items():
                row[what] = row.get(what, 0) + n
        return totals

    def lanes() -> dict[tuple[str, int], int]:
        try:
            active = {(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()}
        except Exception:  # before the first assignment
            return {}
        return {lane: mark for lane, mark in list(rt.metrics.watermarks.items()) if lane in active}

    return WebSource(
        table=resources,
        node=node,
        nodes=index.nodes,
        open_operations=index.open_operations,
        loss=loss_by_publisher,
        source_topics=tuple(rt.topic_names.sources),
        expand=expand,
        refresh=index.refresh,
        newest_events=lambda: newest_events(app, getattr(rt, "processor", None)),
        lanes=lanes,
        agent=lambda: agent_report(rt),
    )


def agent_report(rt: Any) -> Mapping[str, Any]:
    """The stall watch's view of the agent (streams/liveness.py); empty while the watch is off."""
    progress = getattr(rt, "progress", None)
    if progress is None or rt.settings.stall_timeout_s <= 0:
        return {}
    return progress.report(monotonic(), time.time())


def observations(partitions: int, args: argparse.Namespace | None = None) -> Observations:
    """What the views show, made before the worker's app: the agent reports to it from its first record."""
    window_s = getattr(args, "stats_window", None) or _seconds("STATS_WINDOW_S", 900.0)
    slice_s = getattr(args, "stats_slice", None) or _seconds("STATS_SLICE_S", 60.0)
    return Observations(window_s=window_s, slice_s=min(slice_s, window_s), partitions=partitions)


def install(rt: Any, args: argparse.Namespace | None = None) -> WebViews:
    """What `pipeline worker` calls once its app is built with `observations(...)` as its reporter:
    the views are mounted on the app."""
    observations = rt.reporter
    if not isinstance(observations, Observations):
        raise TypeError("the worker's app reports to no Observations: build it with create_app(..., observations(...))")
    scan_cache_s = getattr(args, "web_scan_cache", None) or _seconds("WEB_SCAN_CACHE_S", 2.0)
    views = register(rt.app, source_from_runtime(rt, scan_cache_s), observations, token=secret("WEB_TOKEN"))
    views.extra_counters = lambda: _runtime_counters(rt)

    from pipeline.web.history import HistoryLoader

    client = rt.settings.client_kwargs()
    bootstrap = client.pop("bootstrap_servers")
    loader = HistoryLoader(observations, bootstrap, rt.topic_names.operations, rt.topic_names.alerts,
                           rt.topic_names.sources, **client)
    views.history = loader

    @rt.app.on_partitions_assigned.connect
    async def _reload_history(sender: Any, assigned: Any, **kwargs: Any) -> None:  # noqa: ARG001
        loader.on_assigned(assigned)

    return views


def _runtime_counters(rt: Any) -> Iterable[tuple[str, str, float]]:
    m = getattr(rt, "metrics", None)
    if m is None:
        return ()
    return (
        ("pipeline_relay_records", "Relay records read", m.events),
        ("pipeline_duplicates", "Events dropped as duplicates (same message_id)", m.duplicates),
        ("pipeline_beyond_horizon", "Events older than the dedup memory, counted and not processed", m.beyond_horizon),
    )
