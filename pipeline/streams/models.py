"""Settings, times and the shapes the pure state machine passes around.

Times inside the state are integers, microseconds since the epoch (cheap to compare and to store as
JSON), and so are the times of the records leaving the worker: Avro's ``timestamp-micros`` is that
long, so the codec writes them as they are; JSON values and the web views show them as RFC 3339
(`codec.with_datetimes`).

The state records are stored as JSON in the `resources` table, one per resource, with short keys
(they are written once per event and kept for every resource): the TypedDicts below are their
legend, each key named next to its type.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict

__all__ = [
    "Counter",
    "Expiry",
    "NodeMemory",
    "OpenOperation",
    "Output",
    "ResourceState",
    "Result",
    "Settings",
    "WaitingEnd",
    "micros",
    "new_state",
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
    what: str  # started, ended, errors, missing, late, orphaned, superseded, reconciled, late_after_reconciled


class OpenOperation(TypedDict):
    """An operation started and not ended yet (``ops``, by operation name)."""

    sm: str  # the start's message id
    st: int  # the start's event time
    pub: str  # publisher id
    dl: int  # deadline
    al: int  # when missing_end was raised (0: not yet)
    tp: str | None  # to_power (power_set)
    pps: str | None  # provision state before
    fe: str | None  # the FSM event (provision_set)
    node: str | None  # node UUID


class WaitingEnd(TypedDict):
    """A terminal event that came without its start (``orph``, by operation), waiting
    `orphan_grace_s` for it."""

    em: str  # the end's message id
    et: int  # the end's event time
    pub: str  # publisher id
    oc: Literal["success", "error"]  # outcome
    ps: str | None  # provision state after
    tp: str | None  # to_power
    fe: str | None  # the FSM event
    node: str | None  # node UUID
    until: int  # when it becomes an orphan_end


class NodeMemory(TypedDict):
    """A node's state (``node``, node resources only; `nodes` explains the groups)."""

    f: dict[str, Any]  # field -> value
    s: dict[str, int]  # group -> newest event time seen
    c: dict[str, list]  # group -> [time, message id, event type] of its last change
    n: NotRequired[dict[str, list]]  # group -> the same, of its newest event
    d: NotRequired[dict[str, int]]  # group -> newest time of other values
    u: int  # newest event time
    x: int  # provision change time a stuck_state was raised for (0: none)


class ResourceState(TypedDict):
    """The state record of one resource (the Kafka key)."""

    p: int  # the relay partition it lives in
    t: NotRequired[str]  # ... and its topic: with `p`, the lane whose clock it follows
    w: NotRequired[int]  # that lane's watermark when the record was written (restored at start)
    d: list[list[int]]  # dedup memory: [id hash, event time] (see `dedup`)
    dh: int  # dedup horizon: event time of the newest forgotten id
    ops: dict[str, OpenOperation]
    orph: dict[str, WaitingEnd]
    node: NotRequired[NodeMemory]
    # operations closed from the API's answer: [start message id, until when a late end of it is
    # dropped (event time)], by operation
    rec: NotRequired[dict[str, list]]


@dataclass(slots=True)
class Result:
    state: ResourceState
    outputs: list[Output] = field(default_factory=list)
    expiries: list[Expiry] = field(default_factory=list)
    counters: list[Counter] = field(default_factory=list)
    verdict: str = "new"  # dedup: "new", "duplicate", "beyond_horizon"
    changed: bool = True  # the state must be written back


def new_state(partition: int) -> ResourceState:
    return {"p": partition, "d": [], "dh": 0, "ops": {}, "orph": {}}
