"""/metrics: faust's own sensor metrics (faust.sensors.prometheus) plus ours, in Prometheus text.

Each app gets its own CollectorRegistry, so two apps in one process (tests) do not collide on metric
names. Our figures are read when scraped (a custom collector) from the worker's Observations, its
table index, the watchdog's clocks and the consumer's positions, so the agents pay nothing per event
beyond the counters they already keep. Names follow Prometheus' rules (base units in the name,
counters end in `_total`, no label per UUID); docs/monitoring.md lists them with the alerts.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline import __version__
from pipeline.web.observe import Observations
from pipeline.web.queries import ALERT_TYPES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class WorkerFigures:
    """What one scrape reads from the worker's state, for this worker's active partitions only: a
    partition counts on the worker that owns it now, so a PromQL `sum` over workers is the fleet."""

    nodes: Iterable[Mapping[str, Any]] = ()  # power_state, provision_state, maintenance, stuck
    open_operations: Iterable[Mapping[str, Any]] = ()  # operation, missing_end_raised_at
    consumer_lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    newest_event: Mapping[str, float] = field(default_factory=dict)  # relay topic -> epoch seconds
    loss: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # publisher -> {started, ended, missing, ...}
    counters: Iterable[tuple[str, str, float]] = ()  # (name without _total, help, value)
    lanes: Mapping[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> watermark, µs
    agent: Mapping[str, Any] = field(default_factory=dict)  # stalled, last_progress (liveness.Progress.report)
    now: float = 0.0  # the wall clock of the scrape, epoch seconds


class PipelineCollector(Collector):
    def __init__(self, observations: Observations, figures: Callable[[], WorkerFigures]) -> None:
        self.observations = observations
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        return iter(pipeline_metrics(self.observations, self.figures()))


def _state(value: Any) -> str:
    return "none" if value is None else str(value)


Rows = Iterable[tuple[Iterable[str], float]]


def _gauge(name: str, help_text: str, labels: list[str], rows: Rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, n in rows:
        family.add_metric(list(values), n)
    return family


def _counter(name: str, help_text: str, labels: list[str], rows: Rows) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=labels)
    for values, n in rows:
        family.add_metric(list(values), n)
    return family


def pipeline_metrics(observations: Observations, figures: WorkerFigures) -> list[Metric]:
    """Our metric families from plain figures (pure, so the unit tests read them directly)."""
    return [*_lane_ages(figures), *_counted(observations), *_open_operations(figures), *_nodes(figures),
            *_reading(figures), *_agent(figures), *_extra_counters(figures)]


def _counted(o: Observations) -> list[Metric]:
    """What the agents reported: events, finished operations and their durations, alerts."""
    durations = HistogramMetricFamily(
        "pipeline_operation_duration_seconds",
        "Event-time duration of finished operations (start to end or error), by operation and outcome",
        labels=["operation", "outcome"],
    )
    for (operation, outcome), histogram in sorted(o.duration_histograms.items()):
        durations.add_metric([operation, outcome], histogram.cumulative(), histogram.sum)
    return [
        _gauge("pipeline_build_info", "Always 1: the version of this process", ["component", "version", "python"],
               [(("worker", __version__, platform.python_version()), 1)]),
        _counter("pipeline_events", "Notifications processed, by event type", ["event_type"],
                 (((t,), n) for t, n in sorted(o.events_by_type.items()))),
        _counter("pipeline_operations", "Finished operations, by operation and outcome", ["operation", "outcome"],
                 sorted(o.operations_by_outcome.items())),
        durations,
        # every known type from 0 on, so that increase() over a window sees the first alert of a type
        _counter("pipeline_alerts", "Alerts raised, by type", ["type"],
                 (((t,), o.alerts_by_type.get(t, 0)) for t in sorted(set(ALERT_TYPES) | set(o.alerts_by_type)))),
        _counter("pipeline_deadletters", "Relay records sent to the dead-letter topic", [], [((), o.deadletters)]),
    ]


def _open_operations(figures: WorkerFigures) -> list[Metric]:
    open_counts: dict[str, list[int]] = {}  # operation -> [open, past deadline]
    for op in figures.open_operations:
        row = open_counts.setdefault(str(op.get("operation")), [0, 0])
        row[0] += 1
        row[1] += op.get("missing_end_raised_at") is not None
    rows = sorted(open_counts.items())
    return [
        _gauge("pipeline_open_operations", "Operations started and not ended, on this worker's partitions",
               ["operation"], (((op,), n_open) for op, (n_open, _) in rows)),
        _gauge("pipeline_operations_past_deadline",
               "Open operations whose deadline passed without an end (a missing_end alert was raised)",
               ["operation"], (((op,), n_past) for op, (_, n_past) in rows)),
    ]


def _nodes(figures: WorkerFigures) -> list[Metric]:
    node_counts: dict[tuple[str, str, str], int] = {}
    stuck_counts: dict[str, int] = {}
    for node in figures.nodes:
        provision = _state(node.get("provision_state"))
        key = (_state(node.get("power_state")), provision, "true" if node.get("maintenance") else "false")
        node_counts[key] = node_counts.get(key, 0) + 1
        if node.get("stuck"):
            stuck_counts[provision] = stuck_counts.get(provision, 0) + 1
    return [
        _gauge("pipeline_nodes", "Nodes by power state, provision state and maintenance, on this worker's partitions",
               ["power_state", "provision_state", "maintenance"], sorted(node_counts.items())),
        _gauge("pipeline_nodes_stuck",
               "Nodes still in the transitional provision state a stuck_state alert was raised for",
               ["provision_state"], (((p,), n) for p, n in sorted(stuck_counts.items()))),
    ]


def _reading(figures: WorkerFigures) -> list[Metric]:
    """How far the worker has read: lag, the newest event time, the loss table's counts."""
    return [
        _gauge("pipeline_consumer_lag", "Records not yet processed, per source partition", ["topic", "partition"],
               (((t, str(p)), n) for (t, p), n in sorted(figures.consumer_lag.items()))),
        _gauge("pipeline_relay_newest_event_timestamp_seconds",
               "Event time (the notification's own timestamp) of the newest event read, per relay topic, "
               "over this worker's partitions", ["topic"],
               (((t,), s) for t, s in sorted(figures.newest_event.items()))),
        # A gauge, not a counter: the counts live in the loss table and move with their partition to
        # another worker on a rebalance; a counter falling on one pod would read as a reset to rate().
        _gauge("pipeline_publisher_operations",
               "Operations counted per publisher since the loss table began, by what happened "
               "(started, ended, errors, missing, late, orphaned, superseded), on this worker's partitions",
               ["publisher", "what"],
               (((pub, what), n) for pub, counts in sorted(figures.loss.items()) for what, n in sorted(counts.items()))),
    ]


def _agent(figures: WorkerFigures) -> list[Metric]:
    """Whether the agent keeps up (streams/liveness.py); absent while the stall watch is off."""
    agent = figures.agent
    if "last_progress" not in agent:
        return []
    return [
        _gauge("pipeline_agent_stalled", "1 while records wait (or a batch is held) and the agent has finished "
               "no batch for --stall-timeout; the worker exits by itself soon after", [],
               [((), 1.0 if agent.get("stalled") else 0.0)]),
        _gauge("pipeline_agent_last_progress_timestamp_seconds",
               "When the agent last finished a batch or had nothing to do (epoch seconds)", [],
               [((), round(float(agent["last_progress"]), 3))]),
    ]


def _extra_counters(figures: WorkerFigures) -> list[Metric]:
    return [_counter(name, help_text, [], [((), value)]) for name, help_text, value in figures.counters]


def _lane_ages(figures: WorkerFigures) -> list[Metric]:
    # the wall clock minus each lane's watermark: about lateness + one heartbeat interval when the
    # clock runs; growing while an outage upstream holds it or a bridge is stuck (docs/clock.md)
    lane_ages = {lane: figures.now - mark / 1_000_000 for lane, mark in figures.lanes.items() if mark > 0}
    return [
        _gauge("pipeline_watermark_age_seconds", "Wall clock minus the lane's watermark, per source partition",
               ["topic", "partition"], (((t, str(p)), round(age, 3)) for (t, p), age in sorted(lane_ages.items()))),
        _gauge("pipeline_oldest_watermark_age_seconds",
               "Wall clock minus the oldest watermark of this worker's source partitions", [],
               [((), round(max(lane_ages.values()), 3))] if lane_ages else []),
    ]


def newest_event_seconds(newest_us: Mapping[tuple[str, int], int], active: set[tuple[str, int]]) -> dict[str, float]:
    """Per relay topic, the newest event time (µs per lane, the watchdog's clock) over the lanes in
    `active`, in epoch seconds: lanes this worker no longer owns are left out."""
    out: dict[str, float] = {}
    for (topic, partition), micros in newest_us.items():
        if (topic, partition) in active and micros:
            out[topic] = max(out.get(topic, 0.0), micros / 1e6)
    return out


def new_registry(app: Any | None, collector: Collector) -> CollectorRegistry:
    """A registry with our collector and, when an app is given, faust's Prometheus monitor on it."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    if app is not None:
        from pipeline.streams.faust_patches import install_lean_monitor

        install_lean_monitor(app, registry)  # faust's Prometheus monitor minus its per-event sensors
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def consumer_lag(app: Any, topics: Iterable[str] | None = None) -> dict[tuple[str, int], int]:
    """Per active source partition: the high-water mark minus the next offset to process."""
    lag: dict[tuple[str, int], int] = {}
    try:
        actives = app.assignor.assigned_actives()
        consumer = app.consumer
    except Exception:  # before the first assignment there is nothing to report
        return lag
    wanted = set(topics) if topics is not None else None
    read = app.monitor.tp_read_offsets or {}
    committed = app.monitor.tp_committed_offsets or {}
    for tp in actives:
        if tp.topic.endswith("-changelog") or (wanted is not None and tp.topic not in wanted):
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        if highwater is None:
            continue
        if tp in read:
            position = read[tp] + 1
        elif tp in committed:
            position = committed[tp]
        else:
            continue
        lag[(tp.topic, tp.partition)] = max(0, int(highwater) - int(position))
    return lag
