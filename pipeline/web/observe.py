"""What one worker saw, kept in memory for the web views and /metrics: counters by event type, by
operation outcome and by alert type, the recent alerts, and the duration sketch.

The stream agents call `event`, `operation` and `alert` as they process; these are plain method calls
on plain data (no faust, no I/O), so the agents' hot path pays a dict increment. Nothing here is a
faust table: it is a view of what this worker processed since it started, and the web views merge the
workers' views. Durations over the recent window survive that well; the totals restart with the process,
which is what Prometheus counters are expected to do.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any, Iterable, Mapping

from pipeline.web.sketch import DurationSketch

DEFAULT_RECENT_ALERTS = 1000


def _epoch_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        # microseconds since the epoch (the agents' internal time) when implausibly large for seconds
        return value / 1e6 if value > 1e11 else float(value)
    text = str(value)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
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
    def __init__(self, window_s: float = 900.0, slice_s: float = 60.0, recent_alerts: int = DEFAULT_RECENT_ALERTS) -> None:
        self.events_by_type: dict[str, int] = {}
        self.operations_by_outcome: dict[tuple[str, str], int] = {}
        self.alerts_by_type: dict[str, int] = {}
        self.durations = DurationSketch(window_s=window_s, slice_s=slice_s)
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=recent_alerts)
        self.deadletters = 0

    def event(self, event_type: str) -> None:
        self.events_by_type[event_type] = self.events_by_type.get(event_type, 0) + 1

    def events(self, event_types: Iterable[str]) -> None:
        for event_type in event_types:
            self.event(event_type)

    def operation(self, record: Mapping[str, Any]) -> None:
        """A finished operation, the `pipeline.operations` record (avro/operation.avsc): operation,
        outcome (success, error, superseded), duration_ms (None without both ends), ended_at."""
        operation = str(record.get("operation"))
        outcome = str(record.get("outcome"))
        key = (operation, outcome)
        self.operations_by_outcome[key] = self.operations_by_outcome.get(key, 0) + 1
        duration_ms = record.get("duration_ms")
        ended = _epoch_seconds(record.get("ended_at"))
        if duration_ms is None or ended is None:
            return
        self.durations.add(operation, float(duration_ms), ended, error=outcome == "error")

    def alert(self, record: Mapping[str, Any]) -> None:
        """An alert, the `pipeline.alerts` record (avro/alert.avsc): kind, resource_uuid, operation,
        raised_at, started_at, deadline_at, ..."""
        kind = str(record.get("kind"))
        self.alerts_by_type[kind] = self.alerts_by_type.get(kind, 0) + 1
        self.recent_alerts.append(_jsonable(dict(record)))

    def deadletter(self) -> None:
        self.deadletters += 1

    # the names the stream agents' `Recent` used
    on_event = event
    on_operation = operation
    on_alert = alert
