"""/metrics: faust's own sensor metrics (faust.sensors.prometheus) plus ours, in Prometheus text.

Each app gets its own CollectorRegistry, so two apps in one process (tests) do not collide on metric
names. Our figures are read when scraped (a custom collector) from the worker's Observations and the
consumer's positions, so the agents pay nothing per event beyond the counters they already keep.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.web.observe import Observations

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PipelineCollector(Collector):
    def __init__(
        self,
        observations: Observations,
        open_operations: Callable[[], Mapping[str, int]],
        consumer_lag: Callable[[], Mapping[tuple[str, int], int]],
        counters: Callable[[], Iterable[tuple[str, str, float]]] = lambda: (),
        lanes: Callable[[], Mapping[tuple[str, int], int]] = dict,
    ) -> None:
        self.observations = observations
        self.open_operations = open_operations
        self.consumer_lag = consumer_lag
        self.counters = counters
        self.lanes = lanes

    def collect(self) -> Iterator[Metric]:
        return iter(pipeline_metrics(self.observations, self.open_operations(), self.consumer_lag(), self.counters(),
                                     self.lanes(), time.time()))


def pipeline_metrics(
    observations: Observations,
    open_operations: Mapping[str, int],
    consumer_lag: Mapping[tuple[str, int], int],
    counters: Iterable[tuple[str, str, float]] = (),
    lanes: Mapping[tuple[str, int], int] | None = None,
    now: float = 0.0,
) -> list[Metric]:
    """Our metric families from plain figures (pure, so the unit tests read them directly)."""
    events = CounterMetricFamily("pipeline_events", "Notifications processed, by event type", labels=["event_type"])
    for event_type, n in sorted(observations.events_by_type.items()):
        events.add_metric([event_type], n)
    operations = CounterMetricFamily(
        "pipeline_operations", "Finished operations, by operation and outcome", labels=["operation", "outcome"]
    )
    for (operation, outcome), n in sorted(observations.operations_by_outcome.items()):
        operations.add_metric([operation, outcome], n)
    alerts = CounterMetricFamily("pipeline_alerts", "Alerts raised, by type", labels=["type"])
    for alert_type, n in sorted(observations.alerts_by_type.items()):
        alerts.add_metric([alert_type], n)
    deadletters = CounterMetricFamily("pipeline_deadletters", "Relay records sent to the dead-letter topic")
    deadletters.add_metric([], observations.deadletters)
    open_ops = GaugeMetricFamily(
        "pipeline_open_operations", "Operations started and not ended, on this worker's partitions", labels=["operation"]
    )
    for operation, n in sorted(open_operations.items()):
        open_ops.add_metric([operation], n)
    lag = GaugeMetricFamily(
        "pipeline_consumer_lag", "Records not yet processed, per source partition", labels=["topic", "partition"]
    )
    for (topic, partition), n in sorted(consumer_lag.items()):
        lag.add_metric([topic, str(partition)], n)
    # the wall clock minus each lane's watermark: about lateness + one heartbeat interval when the
    # clock runs; growing while an outage upstream holds it or a bridge is stuck (README, The clock)
    ages = GaugeMetricFamily(
        "pipeline_watermark_age_seconds", "Wall clock minus the lane's watermark, per source partition",
        labels=["topic", "partition"])
    oldest = GaugeMetricFamily("pipeline_oldest_watermark_age_seconds",
                               "Wall clock minus the oldest watermark of this worker's source partitions")
    lane_ages = {lane: now - mark / 1_000_000 for lane, mark in (lanes or {}).items() if mark > 0}
    for (topic, partition), age in sorted(lane_ages.items()):
        ages.add_metric([topic, str(partition)], round(age, 3))
    if lane_ages:
        oldest.add_metric([], round(max(lane_ages.values()), 3))
    extra = []
    for name, help_text, value in counters:
        family = CounterMetricFamily(name, help_text)
        family.add_metric([], value)
        extra.append(family)
    return [events, operations, alerts, deadletters, open_ops, lag, ages, oldest, *extra]


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
