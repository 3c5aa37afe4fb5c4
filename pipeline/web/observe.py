"""What one worker saw, kept in memory for the web views and /metrics: counters by event type, by
operation outcome and by alert type, and per source partition the duration sketch and recent alerts.

The stream agents call `event`, `operation`, `alert` and `deadletter` as they process; these are plain
method calls on plain data (no faust, no I/O), so the agents' hot path pays a dict increment and a
bucket increment. `operation` is called once per published operation record, not per event, and
also feeds the Prometheus duration histogram (`DURATION_BUCKETS_S`). Nothing here is a faust table.
Durations and recent alerts are kept per source
partition, so that when a partition moves to another worker the old owner drops its share and the new
owner reloads it from the output topics (`history.py`): the fleet-wide merge counts every operation
once. The counters are this process's totals since it started, which is what Prometheus expects of a
counter.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from aiokafka.partitioner import murmur2
from prometheus_client.utils import floatToGoString

from pipeline.catalog import OPERATIONS
from pipeline.web.sketch import DurationSketch

DEFAULT_RECENT_ALERTS = 1000

# Upper bounds (seconds) of pipeline_operation_duration_seconds: a 1-2.5-5 ladder from 1 s to 4 h,
# plus every catalog deadline within it, so "ended after its deadline" is a bucket boundary
# (histogram_quantile and le="300" answer it exactly for power_set's 300 s). Task deadlines (a day)
# fall in +Inf: Glance import tasks are rare and their duration is not what operators graph.
_LADDER_S = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
DURATION_BUCKETS_S: tuple[float, ...] = tuple(sorted(
    {float(b) for b in _LADDER_S} | {d for d in OPERATIONS.values() if d <= _LADDER_S[-1]}))


class DurationHistogram:
    """Prometheus histogram data of one (operation, outcome): per-bucket counts (not cumulative, the
    last one is +Inf) and the sum of seconds. Never reset: Prometheus computes rates from it."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS_S, seconds)] += 1  # le: a value on a bound is in it
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        buckets, total = [], 0
        for bound, n in zip((*DURATION_BUCKETS_S, float("inf")), self.counts):
            total += n
            buckets.append((floatToGoString(bound), total))  # "1.0", "+Inf": as prometheus_client spells le
        return buckets


def epoch_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        # microseconds since the epoch (the agents' internal time) when implausibly large for seconds
        return value / 1e6 if value > 1e11 else float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class Observations:
    def __init__(
        self,
        window_s: float = 900.0,
        slice_s: float = 60.0,
        recent_alerts: int = DEFAULT_RECENT_ALERTS,
        partitions: int = 1,
    ) -> None:
        self.window_s = window_s
        self.slice_s = slice_s
        self.partitions = max(1, partitions)
        self.recent_alerts_per_partition = recent_alerts
        self.events_by_type: dict[str, int] = {}
        self.operations_by_outcome: dict[tuple[str, str], int] = {}
        self.alerts_by_type: dict[str, int] = {}
        self.deadletters = 0
        # (operation, outcome) -> histogram of the records with a duration (superseded ones have none)
        self.duration_histograms: dict[tuple[str, str], DurationHistogram] = {}
        self.sketches: dict[int, DurationSketch] = {}
        self.alerts: dict[int, deque[dict[str, Any]]] = {}
        # while a partition's history loads: ids the agent reported meanwhile, so none counts twice
        self.loading: dict[int, set[str]] = {}

    # ---- what the agents report --------------------------------------------------------------------

    def partition_of(self, record: Mapping[str, Any]) -> int:
        """The source partition of a record: murmur2 of its resource UUID, like the bridge's key."""
        key = record.get("resource_uuid") or record.get("node_uuid") or ""
        return (murmur2(str(key).encode()) & 0x7FFFFFFF) % self.partitions

    def event(self, event_type: str) -> None:
        self.events_by_type[event_type] = self.events_by_type.get(event_type, 0) + 1

    def deadletter(self) -> None:
        self.deadletters += 1

    def operation(self, record: Mapping[str, Any], partition: int | None = None) -> None:
        """A finished operation, the `pipeline.operations` record (avro/operation.avsc): operation,
        outcome (success, error, superseded), duration_ms (None without both ends), ended_at."""
        operation = str(record.get("operation"))
        outcome = str(record.get("outcome"))
        key = (operation, outcome)
        self.operations_by_outcome[key] = self.operations_by_outcome.get(key, 0) + 1
        duration_ms = record.get("duration_ms")
        if duration_ms is not None and not record.get("reconciled"):  # an upper bound only: kept out
            histogram = self.duration_histograms.get(key)
            if histogram is None:
                histogram = self.duration_histograms[key] = DurationHistogram()
            histogram.observe(duration_ms / 1000.0)
        self._sketch_operation(record, self.partition_of(record) if partition is None else partition)

    def alert(self, record: Mapping[str, Any], partition: int | None = None) -> None:
        """An alert, the `pipeline.alerts` record (avro/alert.avsc): kind, resource_uuid, operation,
        raised_at, started_at, deadline_at, ..."""
        kind = str(record.get("kind"))
        self.alerts_by_type[kind] = self.alerts_by_type.get(kind, 0) + 1
        self._keep_alert(record, self.partition_of(record) if partition is None else partition)

    def _sketch_operation(self, record: Mapping[str, Any], partition: int) -> None:
        loading = self.loading.get(partition)
        if loading is not None and record.get("op_id"):
            loading.add(str(record["op_id"]))
        duration_ms = record.get("duration_ms")
        ended = epoch_seconds(record.get("ended_at"))
        if duration_ms is None or ended is None:
            return
        sketch = self.sketches.get(partition)
        if sketch is None:
            sketch = self.sketches[partition] = DurationSketch(self.window_s, self.slice_s)
        sketch.add(str(record.get("operation")), float(duration_ms), ended, error=record.get("outcome") == "error",
                   reconciled=bool(record.get("reconciled")))

    def _keep_alert(self, record: Mapping[str, Any], partition: int) -> None:
        loading = self.loading.get(partition)
        if loading is not None and record.get("alert_id"):
            loading.add(str(record["alert_id"]))
        kept = self.alerts.get(partition)
        if kept is None:
            kept = self.alerts[partition] = deque(maxlen=self.recent_alerts_per_partition)
        kept.append(_jsonable(dict(record)))

    # ---- partitions moving -------------------------------------------------------------------------

    def held(self) -> set[int]:
        return set(self.sketches) | set(self.alerts) | set(self.loading)

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.sketches.pop(p, None)
            self.alerts.pop(p, None)
            self.loading.pop(p, None)

    def start_loading(self, partition: int) -> None:
        self.loading[partition] = set()

    def loaded(self, partition: int, operations: Iterable[Mapping[str, Any]], alerts: Iterable[Mapping[str, Any]]) -> None:
        """A partition's history read from the output topics, minus what the agent reported meanwhile."""
        seen = self.loading.pop(partition, set())
        for record in operations:
            if str(record.get("op_id")) not in seen:
                self._sketch_operation(record, partition)
        history = [a for a in alerts if str(a.get("alert_id")) not in seen]
        newer = list(self.alerts.get(partition, ()))
        kept = self.alerts[partition] = deque(maxlen=self.recent_alerts_per_partition)
        for record in history:
            kept.append(_jsonable(dict(record)))
        kept.extend(newer)

    # ---- what the views read -----------------------------------------------------------------------

    @property
    def durations(self) -> DurationSketch:
        total = DurationSketch(self.window_s, self.slice_s)
        for sketch in list(self.sketches.values()):
            total.merge(sketch)
        return total

    @property
    def recent_alerts(self) -> list[dict[str, Any]]:
        return [a for kept in list(self.alerts.values()) for a in kept]
