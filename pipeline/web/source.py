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
from typing import Any, Callable, Iterable, Mapping

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


class _Cached:
    def __init__(self, compute: Callable[[], list], ttl_s: float) -> None:
        self.compute = compute
        self.ttl_s = ttl_s
        self.value: list | None = None
        self.at = 0.0

    def __call__(self) -> list:
        now = monotonic()
        if self.value is None or now - self.at >= self.ttl_s:
            self.value = self.compute()
            self.at = now
        return self.value


def active_partitions(app: Any, changelog_topic: str) -> set[int]:
    try:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog_topic}
    except Exception:
        return set()


def source_from_runtime(rt: Any, scan_cache_s: float = 2.0) -> WebSource:
    """A WebSource over the stream agents' `Runtime` (pipeline.streams.app)."""
    from pipeline.streams import state

    app = rt.app
    resources, loss = rt.resources, rt.loss
    resources_changelog = resources.changelog_topic.get_topic_name()
    loss_changelog = loss.changelog_topic.get_topic_name()

    def owned(table_changelog: str) -> set[int]:
        return active_partitions(app, table_changelog)

    def records() -> list[tuple[str, dict]]:
        mine = owned(resources_changelog)
        out = []
        for key, raw in list(resources.items()):
            st = orjson.loads(raw)
            if st.get("p", 0) in mine:
                out.append((key.decode(), st))
        return out

    def scan_nodes() -> list[dict]:
        from pipeline.streams import nodes

        return [
            state.as_json({"uuid": uuid, **nodes.record(uuid, st["node"])})
            for uuid, st in records()
            if st.get("node")
        ]

    def scan_open() -> list[dict]:
        out: list[dict] = []
        for uuid, st in records():
            if st.get("ops"):
                out.extend(state.as_json(op) for op in state.open_operations(uuid, orjson.dumps(st)))
        return out

    def node(uuid: str) -> dict | None:
        raw = resources.get(uuid.encode())
        record = state.node_state(uuid, raw)
        if record is None:
            return None
        return state.as_json({"uuid": uuid, **record, "open_operations": state.open_operations(uuid, raw)})

    def loss_by_publisher() -> Mapping[str, Mapping[str, float]]:
        mine = owned(loss_changelog)
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
        nodes=_Cached(scan_nodes, scan_cache_s),
        open_operations=_Cached(scan_open, scan_cache_s),
        loss=loss_by_publisher,
        source_topics=tuple(rt.topic_names.sources),
    )


def install(rt: Any, args: argparse.Namespace | None = None) -> WebViews:
    """What `pipeline worker` calls once its app is built: the agents report to our Observations
    (they call `rt.recent.on_operation/on_alert/on_event`), and the views are mounted."""
    window_s = getattr(args, "stats_window", None) or _seconds("STATS_WINDOW_S", 900.0)
    slice_s = getattr(args, "stats_slice", None) or _seconds("STATS_SLICE_S", 60.0)
    scan_cache_s = getattr(args, "web_scan_cache", None) or _seconds("WEB_SCAN_CACHE_S", 2.0)
    observations = Observations(window_s=window_s, slice_s=min(slice_s, window_s))
    rt.recent = observations
    processor = getattr(rt, "processor", None)
    if processor is not None:
        processor.recent = observations
    views = register(rt.app, source_from_runtime(rt, scan_cache_s), observations)
    views.extra_counters = lambda: _runtime_counters(rt)
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
