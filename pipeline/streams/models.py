"""Settings, times and the shapes the pure state machine passes around.

Times inside the state are integers, microseconds since the epoch (cheap to compare and to store as
JSON); records leaving the worker carry `datetime` objects, which fastavro writes as
``timestamp-micros`` and orjson as RFC 3339.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = [
    "Counter",
    "Expiry",
    "Output",
    "Result",
    "Settings",
    "micros",
    "to_datetime",
]

SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


def micros(timestamp: str) -> int:
    """RFC 3339 text (the normalized event's timestamp) -> microseconds since the epoch, UTC."""
    ts = datetime.fromisoformat(timestamp)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _ONE_MICRO


def to_datetime(us: int | None) -> datetime | None:
    return None if us is None else _as_datetime(us)


@lru_cache(maxsize=65536)  # a node's change times recur in each of its records; datetimes are immutable
def _as_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the state machine needs to know; every value has a flag in `pipeline worker`."""

    deadlines: Mapping[str, float] = field(default_factory=dict)  # operation -> seconds (catalog + overrides)
    default_deadline_s: float = 600.0  # an operation with no deadline of its own
    orphan_grace_s: float = 300.0  # how long a terminal event waits for its start
    stuck_after_s: float = 3600.0  # transitional provision state held longer -> stuck_state
    late_horizon_s: float = 86400.0  # after a missing_end, how long a late end is still paired
    dedup_window_s: float = 3600.0  # message ids remembered per resource, in event time
    dedup_max_ids: int = 32  # ... and at most this many

    def deadline_us(self, operation: str) -> int:
        return int(self.deadlines.get(operation, self.default_deadline_s) * SECOND)


class Output(NamedTuple):
    """A record to publish: kind is "operation", "alert" or "node_state"; id is deterministic."""

    kind: str
    key: str  # resource (or node) UUID, the Kafka key
    id: str
    record: dict


class Expiry(NamedTuple):
    """A check the watchdog runs once the partition's watermark passes `due` (microseconds)."""

    due: int
    kind: str  # "deadline", "orphan", "stuck", "forget"
    name: str  # the operation ("" for stuck)
    token: str | int  # identifies what was scheduled: start/end message id, or the change time


class Counter(NamedTuple):
    """One increment of the loss accounting: (publisher, operation, what)."""

    publisher: str
    operation: str
    what: str  # started, ended, errors, missing, late, orphaned, superseded


@dataclass(slots=True)
class Result:
    state: dict
    outputs: list[Output] = field(default_factory=list)
    expiries: list[Expiry] = field(default_factory=list)
    counters: list[Counter] = field(default_factory=list)
    verdict: str = "new"  # dedup: "new", "duplicate", "beyond_horizon"
    changed: bool = True  # the state must be written back


def new_state(partition: int) -> dict[str, Any]:
    return {"p": partition, "d": [], "dh": 0, "ops": {}, "orph": {}}
