"""What the reconciler asks about, and when it asks again: pure functions over alerts and answers.

A job is one question: an alert (`missing_end`, `stuck_state`) or a resource of ``--resources``.
It is asked at once; an answer that shows the operation still running (or the node still in its
transitional state) is written too (the node state heals) and the job is asked again later, the
wait doubling, until ``--give-up-after`` past the alert. A failed request (the API down, 429, 5xx,
401/403) writes nothing and is retried with backoff, without end: nothing is closed on a guess and
no alert is dropped. A `reconciled` alert naming the job's alert, or a `resolved_late` for its
operation (the end came after all), ends the job.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import catalog, events, observed

__all__ = ["ASKED", "Job", "from_alert", "from_line", "next_delay", "settled"]

ASKED = ("missing_end", "stuck_state")
SECOND = 1_000_000


@dataclass(slots=True)
class Job:
    about: str  # the alert id, or "list" for a resource of --resources
    family: str
    resource: str
    operation: str | None  # None: a node's state (stuck_state, a listed resource)
    started_us: int | None  # the operation's start (missing_end), µs
    give_up_at: float  # wall seconds: a still-running answer is not asked again after this
    origin: tuple[str, int, int] | None = None  # (topic, partition, offset) of the alert
    attempts: int = 0  # answers that showed it still running
    failures: int = 0  # requests that failed since the last answer
    due: float = 0.0  # wall seconds of the next question
    done: bool = False
    extra: dict = field(default_factory=dict)


def _time_us(value: Any) -> int | None:
    """An alert's time: µs (Avro) or RFC 3339 text (JSON values)."""
    if isinstance(value, int):
        return value
    if hasattr(value, "timestamp"):  # a datetime (Avro read with logical types)
        return int(value.timestamp() * SECOND)
    if isinstance(value, str):
        from .. import wire

        return int(wire.parse_timestamp(value).timestamp() * SECOND)
    return None


def from_alert(alert: Mapping[str, Any], now: float, give_up_s: float,
               origin: tuple[str, int, int] | None = None) -> Job | None:
    """The job an alert asks for, or None (another kind, or a resource no API answers for here)."""
    kind = alert.get("kind")
    resource = events.canonical_uuid(alert.get("resource_uuid"))
    if kind not in ASKED or resource is None:
        return None
    operation = alert.get("operation") if kind == "missing_end" else None
    family = catalog.OPERATION_FAMILY.get(operation or "") if operation else "baremetal.node"
    if family is None or family not in catalog.OBSERVABLE:
        return None
    started = _time_us(alert.get("started_at"))
    since = (started / SECOND) if started else now
    return Job(about=str(alert.get("alert_id") or ""), family=family, resource=resource, operation=operation,
               started_us=started if operation else None, give_up_at=max(now, since + give_up_s), origin=origin,
               due=now)


def from_line(line: str, now: float) -> Job | None:
    """A line of ``--resources``: ``UUID`` (a node) or ``FAMILY UUID``; None for a blank or # line.
    Raises ValueError with the reason for anything else."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    parts = text.split()
    family, raw = ("baremetal.node", parts[0]) if len(parts) == 1 else (parts[0], parts[-1])
    if len(parts) > 2 or family not in catalog.OBSERVABLE:
        raise ValueError(f"{line.strip()!r}: expected UUID or FAMILY UUID, FAMILY one of {', '.join(catalog.OBSERVABLE)}")
    resource = events.canonical_uuid(raw)
    if resource is None:
        raise ValueError(f"{raw!r} is not a UUID")
    return Job(about="list", family=family, resource=resource, operation=None, started_us=None, give_up_at=now,
               due=now)


def settled(job: Job, obs: observed.Observation, observed_us: int) -> bool:
    """The answer ends the job: the operation finished (or has no rule to wait on), the resource
    is gone, or a node left its transitional state."""
    if not obs.found:
        return True
    if job.operation is not None:
        if job.operation not in catalog.FINISHES:
            return True
        return observed.outcome(job.operation, job.started_us or 0, {}, obs, observed_us) is not None
    if job.family != "baremetal.node":
        return True
    return obs.fields.get("provision_state") not in catalog.IRONIC_TRANSITIONAL \
        and obs.fields.get("target_provision_state") is None


def next_delay(count: int, first_s: float, max_s: float, jitter: float = 0.2) -> float:
    """The wait before the next question after `count` in a row (running answers or failures):
    doubling from `first_s` up to `max_s`, jittered so that replicas and jobs do not knock together."""
    delay = min(first_s * (2 ** max(0, count - 1)), max_s)
    return delay * random.uniform(1 - jitter, 1 + jitter)


def closes(alert: Mapping[str, Any], job: Job) -> bool:
    """This alert ends the job: a `reconciled` naming its alert, or a `resolved_late` of its
    operation (the end came after all)."""
    kind = alert.get("kind")
    if kind == "reconciled":
        return alert.get("resolves") == job.about
    if kind == "resolved_late":
        return job.operation is not None and alert.get("operation") == job.operation \
            and alert.get("resource_uuid") == job.resource
    return False
