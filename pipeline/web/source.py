"""The seam between the stream agents and the web views: reading the worker's tables
(`pipeline.streams.state`) for this worker's active partitions only, and the `install` the worker calls.

A faust table iterates what this process holds, which with `memory://` includes standby copies of
other workers' partitions; every record knows its partition (`p` in a resource record, the prefix of
a loss key), so the views keep only the partitions this worker is active for, and a fleet view that
merges the workers' answers counts every node once.

Scanning a large table on every request would compete with the agent for the event loop, so a full
scan is shared by the requests of `scan_cache_s` seconds (the dashboard refreshes every 5 s).
"""

from __future__ import annotations

import argparse
from time import monotonic
from typing import Any, Iterable, Mapping

import orjson

from pipeline.config import ConfigError, env
from pipeline.web.observe import Observations
from pipeline.web.views import WebSource, WebViews, register


def _seconds(name: str, default: float) -> float:
    raw = env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} is not a positive number of seconds")
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
    """What the views need of one resource record, decoded once per change of the record."""

    __slots__ = ("raw", "partition", "node", "light", "ops")

    def __init__(self, uuid: str, raw: bytes) -> None:
        from pipeline.streams import state

        st = orjson.loads(raw)
        self.raw = raw
        self.partition: int = st.get("p", 0)
        self.node: dict | None = st.get("node")
        self.light: dict | None = None
        if self.node is not None:
            fields = self.node["f"]
            self.light = {
                "uuid": uuid,
                "power_state": fields.get("power_state"),
                "provision_state": fields.get("provision_state"),
                "maintenance": fields.get("maintenance"),
            }
        self.ops: list[dict] = [state.as_json(op) for op in state.open_operations(uuid, raw)] if st.get("ops") else []


class TableIndex:
    """The resources table as the views read it, kept by comparing each record with the one decoded
    last time: a scan of 100,000 unchanged nodes is a pass of byte comparisons, not of JSON parsing.
    One scan serves the requests of `ttl_s` seconds."""

    def __init__(self, app: Any, table: Any, ttl_s: float) -> None:
        self.app = app
        self.table = table
        self.changelog = table.changelog_topic.get_topic_name()
        self.ttl_s = ttl_s
        self.entries: dict[bytes, _Entry] = {}
        self.active: list[_Entry] = []
        self.at: float | None = None

    def refresh(self) -> list[_Entry]:
        now = monotonic()
        if self.at is not None and now - self.at < self.ttl_s:
            return self.active
        mine = active_partitions(self.app, self.changelog)
        entries, seen = self.entries, {}
        for key, raw in list(self.table.items()):
            entry = entries.get(key)
            if entry is None or entry.raw != raw:
                entry = _Entry(key.decode(), raw)
            seen[key] = entry
        self.entries = seen
        self.active = [e for e in seen.values() if e.partition in mine]
        self.at = now
        return self.active

    def nodes(self) -> list[dict]:
        return [e.light for e in self.refresh() if e.light is not None]

    def open_operations(self) -> list[dict]:
        return [op for e in self.refresh() for op in e.ops]


def active_partitions(app: Any, changelog_topic: str) -> set[int]:
    try:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog_topic}
    except Exception:
        return set()


def source_from_runtime(rt: Any, scan_cache_s: float = 2.0) -> WebSource:
    """A WebSource over the stream agents' `Runtime` (pipeline.streams.app)."""
    from pipeline.streams import nodes as node_records, state

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
        """The full node-state record of a node a fleet view returns."""
        entry = index.entries.get(light["uuid"].encode())
        if entry is None or entry.node is None:
            return light
        return state.as_json({"uuid": light["uuid"], **node_records.record(light["uuid"], entry.node)})

    def loss_by_publisher() -> Mapping[str, Mapping[str, float]]:
        mine = active_partitions(app, loss_changelog)
        rows = [(k, v) for k, v in list(loss.items()) if int(k.split(b"|", 1)[0]) in mine]
        totals: dict[str, dict[str, float]] = {}
        for (publisher, _operation), counts in state.loss_totals(rows).items():
            row = totals.setdefault(publisher, {})
            for what, n in counts.items():
                row[what] = row.get(what, 0) + n
        return totals

    return WebSource(
        table=resources,
        node=node,
        nodes=index.nodes,
        open_operations=index.open_operations,
        loss=loss_by_publisher,
        source_topics=tuple(rt.topic_names.sources),
        expand=expand,
    )


def install(rt: Any, args: argparse.Namespace | None = None) -> WebViews:
    """What `pipeline worker` calls once its app is built: the agents report to our Observations
    (they call `rt.recent.on_operation/on_alert/on_event`), and the views are mounted."""
    window_s = getattr(args, "stats_window", None) or _seconds("STATS_WINDOW_S", 900.0)
    slice_s = getattr(args, "stats_slice", None) or _seconds("STATS_SLICE_S", 60.0)
    scan_cache_s = getattr(args, "web_scan_cache", None) or _seconds("WEB_SCAN_CACHE_S", 2.0)
    observations = Observations(window_s=window_s, slice_s=min(slice_s, window_s), partitions=rt.partitions)
    rt.recent = observations
    processor = getattr(rt, "processor", None)
    if processor is not None:
        processor.recent = observations
    views = register(rt.app, source_from_runtime(rt, scan_cache_s), observations)
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
