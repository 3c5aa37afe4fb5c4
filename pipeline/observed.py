"""Observations: what the owning service's API answered about a resource, as a record of the
pipeline's own on the resource's relay topic (docs/reconcile.md). Pure: no I/O.

`pipeline reconcile` makes them (`observation`) and the worker folds them in order with the
notifications (streams/operations.py), judging with `outcome` whether an open operation finished,
and `drift` says where a node-state record and the API disagree (the sweep).

An observation is a normalized event: event type ``pipeline.observed``, publisher
``pipeline.reconciler``, the resource's family, key and relay topic, so it is partitioned like the
resource's notifications and read in order with them. Its payload carries the fields read under the
key the service's own notifications use (``ironic_object.data`` for Ironic), so the node-state code
folds it as it folds a notification, and ``observation``: `found` (false: the API answered 404),
`observed_at` (when it answered), `about` (the alert it answers, or ``sweep``) and `source`.

Its ``timestamp`` is the resource's ``updated_at`` (when what it reports became true), else the
time of the answer. Its message id is a uuid5 of the resource, what it answers and the answer
itself, so a second reconciler or a replay writes the same id and the worker's dedup drops it.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from . import catalog, events, wire

__all__ = ["Observation", "drift", "message_id", "micros_of", "observation", "outcome", "read"]

_NS = uuid.UUID("0b6f3a52-3f7c-4c8e-9d0e-5a1c2f7b9e64")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = 1_000_000
# the node-state fields a sweep compares with the API (a lost power_state_corrected or an
# intermediate provision_set.success shows here)
DRIFT_FIELDS = ("power_state", "provision_state", "maintenance")


def message_id(family: str, resource: str, about: str, found: bool, answer: Mapping[str, Any]) -> str:
    """The same answer to the same question gets the same id, whoever asked and whenever."""
    text = orjson.dumps([family, resource, about, found, answer], option=orjson.OPT_SORT_KEYS)
    return str(uuid.uuid5(_NS, text.decode()))


def observation(family: str, resource: str, answer: Mapping[str, Any] | None, *, observed_at: datetime,
                about: str, source: str, topic_prefix: str = events.DEFAULT_TOPIC_PREFIX) -> dict:
    """The normalized event of one answer: `answer` holds the API's fields (None: 404)."""
    spec = catalog.OBSERVABLE[family]
    found = answer is not None
    fields = {f: _plain(answer.get(f)) for f in spec.fields} if answer is not None else {}
    if not found and family == "baremetal.node":
        fields = {"deleted": True}  # the node-state record's own word for a node that is no more
    fields.setdefault("uuid" if spec.wrapper else "id", resource)
    updated = _updated(fields) if found else None
    meta = {"found": found, "observed_at": wire.rfc3339(observed_at), "about": about, "source": source}
    payload: dict[str, Any] = {spec.wrapper: fields} if spec.wrapper else dict(fields)
    payload["observation"] = meta
    node = resource if family == "baremetal.node" else None
    return {
        "message_id": message_id(family, resource, about, found, fields),
        "event_type": catalog.OBSERVED_EVENT_TYPE,
        "priority": "info",
        "publisher_id": catalog.OBSERVER,
        "timestamp": wire.rfc3339(updated[0] if updated else observed_at),
        "service": spec.service,
        "family": family,
        "resource_uuid": resource,
        "node_uuid": node,
        "action": "observed",
        "phase": None,
        "operation": None,
        "payload_name": None,
        "payload_version": None,
        "topic": events.topic_for(family, topic_prefix),
        "payload": payload,
    }


def _plain(value: Any) -> Any:
    """openstacksdk gives datetimes as text already; anything else JSON cannot hold, as text."""
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _time(text: Any) -> tuple[datetime, int] | None:
    """An API time (ISO 8601, maybe naive UTC) -> (aware datetime, its resolution in µs): Glance
    gives whole seconds, so an update within the second of a start may read as before it."""
    if not isinstance(text, str) or not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts, 1 if "." in text else _SECOND


def micros_of(ts: datetime) -> int:
    """An aware datetime as µs since the epoch (the worker's times)."""
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _updated(fields: Mapping[str, Any]) -> tuple[datetime, int] | None:
    """When the resource last changed: Ironic leaves updated_at null until the first change."""
    return _time(fields.get("updated_at") or fields.get("created_at"))


class Observation(NamedTuple):
    """An observation as the worker reads it."""

    found: bool
    fields: Mapping[str, Any]  # the API's fields
    updated_us: int | None  # the resource's updated_at, µs
    resolution_us: int  # ... to within this
    about: str


def read(event: Mapping[str, Any]) -> Observation:
    payload = _mapping(event.get("payload"))
    meta = _mapping(payload.get("observation"))
    spec = catalog.OBSERVABLE.get(event.get("family") or "")
    fields = _mapping(payload.get(spec.wrapper)) if spec is not None and spec.wrapper else payload
    updated = _updated(fields)
    return Observation(
        found=bool(meta.get("found", True)),
        fields=fields,
        updated_us=micros_of(updated[0]) if updated else None,
        resolution_us=updated[1] if updated else _SECOND,
        about=str(meta.get("about") or ""),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def outcome(operation: str, started_us: int, asked: Mapping[str, Any], obs: Observation,
            observed_us: int) -> tuple[str, int] | None:
    """(outcome, end time µs) when the answer shows the operation finished, else None (still
    running, an answer from before the start, or an operation the catalog has no rule for).
    `asked`: what the start asked for (power_set's ``to_power``); `observed_us`: the answer's time,
    the end of an operation whose resource is gone."""
    rule = catalog.FINISHES.get(operation)
    if rule is None:
        return None
    if not obs.found:
        return rule.gone, observed_us
    if obs.updated_us is None or obs.updated_us + obs.resolution_us <= started_us:
        return None  # the answer does not know of this operation yet
    fields = obs.fields
    ended = max(obs.updated_us, started_us)
    if rule.state is None:
        return "success", ended
    if rule.target is not None and fields.get(rule.target) is not None:
        return None
    state = fields.get(rule.state)
    if state is None or state in rule.running:
        return None
    if state in rule.failed:
        return "error", ended
    if rule.expect is not None and rule.reached is not None:
        wanted = rule.reached.get(asked.get(rule.expect) or "")
        if wanted is not None and state != wanted:
            return "error", ended
    return "success", ended


def drift(record: Mapping[str, Any] | None, answer: Mapping[str, Any]) -> list[str]:
    """The fields of `DRIFT_FIELDS` where a node-state record and the API's node differ (a node the
    pipeline has no record of differs in all of them); a node still moving (a target set) is
    compared anyway: the record should show the same move."""
    if record is None:
        return list(DRIFT_FIELDS)
    out = []
    for name in DRIFT_FIELDS:
        mine, theirs = record.get(name), answer.get(name)
        if name == "maintenance":
            mine, theirs = bool(mine), bool(theirs)
        if mine != theirs:
            out.append(name)
    return out
