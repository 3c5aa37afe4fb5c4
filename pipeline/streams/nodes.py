"""Node state: a pure reducer over node events, newest event time wins per field group.

Every Ironic node payload (power_set, power_state_corrected, provision_set, maintenance_set,
console_*, node CRUD) is a snapshot of the node, so each event updates every group whose fields it
carries, unless that group has already seen a newer event. A group's change time and the event that
made it (`c`) move only when one of its values really changes; that is also when the full state is
published to the compacted ``pipeline.node-state``.

Stored shape (JSON in the resource record, key ``node``):
``{"f": {field: value}, "s": {group: newest event time seen}, "c": {group: [time, message_id,
event_type]}, "n": {group: newest event, same shape}, "d": {group: newest time of other values},
"u": newest event time, "x": stuck-alerted provision change time or 0}``.
"""
from __future__ import annotations

from typing import Any

from .. import catalog
from .models import NodeMemory

__all__ = ["GROUPS", "TRANSITIONAL", "apply", "in_transition_since", "record"]

GROUPS: dict[str, tuple[str, ...]] = {
    "power": ("power_state", "target_power_state"),
    "provision": ("provision_state", "target_provision_state", "previous_provision_state"),
    "maintenance": ("maintenance", "maintenance_reason"),
    "last_error": ("last_error",),
    "console": ("console_enabled",),
    "deleted": ("deleted",),
}
FIELDS: tuple[str, ...] = tuple(f for fields in GROUPS.values() for f in fields)
_GROUP_ITEMS = tuple(GROUPS.items())
# per group: the record's keys for its change (time, message id, event type)
_CHANGE_KEYS = tuple((g, f"{g}_changed_at", f"{g}_changed_by", f"{g}_changed_event") for g in GROUPS)

# a node in one of these longer than --stuck-after is stuck
TRANSITIONAL = catalog.IRONIC_TRANSITIONAL


def _snapshot(event: dict) -> dict[str, Any] | None:
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return None
    data = payload.get("ironic_object.data")
    if not isinstance(data, dict):
        return None
    if event.get("action") in ("delete", "create"):
        # the API's delete.end is the last word on a node; create.end brings it (back) to life
        if event.get("phase") == "end":
            data = {**data, "deleted": event["action"] == "delete"}
    return data


def new_node() -> NodeMemory:
    return {"f": {f: None for f in FIELDS}, "s": {}, "c": {}, "n": {}, "d": {}, "u": 0, "x": 0}


def apply(node: NodeMemory | None, event: dict, ts: int) -> tuple[NodeMemory | None, bool]:
    """Fold one event of family baremetal.node into the node; returns (node, changed).

    Values: the newest event of a group wins. The change record must not depend on arrival order
    either (a retried relay record arrives after newer ones): it is the earliest event known to
    carry the current values with no known event of other values after it. So per group we keep
    the newest event (`n`) and the newest time an event of other values was seen (`d`); an older
    event with the current values moves the change back, one with other values moves it forward
    (to the newest event: the first of the final run is not kept, so that case is approximate).
    """
    data = _snapshot(event)
    if data is None:
        return node, False
    if node is None:
        node = new_node()
    values, seen, changes = node["f"], node["s"], node["c"]
    newest, differs = node.setdefault("n", {}), node.setdefault("d", {})
    mark = [ts, event["message_id"], event["event_type"]]
    changed = False
    get, given = values.get, data.get
    for group, fields in _GROUP_ITEMS:
        if fields[0] not in data:
            continue
        # values in the order of `fields` (lists: this runs for every node event)
        current = list(map(get, fields))
        new = list(map(given, fields, current))
        if group == "provision" and "previous_provision_state" not in data and new[0] != current[0]:
            new[2] = current[0]  # provision_state, target_provision_state, previous_provision_state
        elif group == "maintenance":
            new[0] = bool(new[0])
        change = changes.get(group)
        at = seen.get(group, 0)
        if ts >= at:
            if new != current:
                differs[group] = at
                values.update(zip(fields, new))
                changes[group] = mark
                changed = True
            seen[group] = ts
            newest[group] = mark
        elif new == current:
            if change is not None and differs.get(group, 0) < ts < change[0]:
                changes[group] = mark
                changed = True
        else:
            differs[group] = max(differs.get(group, 0), ts)
            if change is not None and ts > change[0]:
                changes[group] = newest.get(group, change)
                changed = changes[group] != change
    if ts > node["u"]:
        node["u"] = ts
    return node, changed


def in_transition_since(node: NodeMemory | None) -> int | None:
    """The time the node entered its current provision state, if that state is transitional."""
    if node is None or node["f"].get("provision_state") not in TRANSITIONAL:
        return None
    change = node["c"].get("provision")
    return change[0] if change else None


def record(node_uuid: str, node: NodeMemory) -> dict:
    """The ``pipeline.node-state`` record (avro/node_state.avsc), times in µs."""
    values, changes = node["f"], node["c"]
    rec: dict[str, Any] = {"node_uuid": node_uuid}
    get = values.get
    for f in FIELDS:
        rec[f] = get(f)
    rec["maintenance"] = bool(rec["maintenance"]) if rec["maintenance"] is not None else None
    rec["deleted"] = bool(rec["deleted"])
    rec["updated_at"] = node["u"] or None
    for group, at, by, event_type in _CHANGE_KEYS:
        change = changes.get(group)
        if change:
            rec[at], rec[by], rec[event_type] = change[0], change[1], change[2]
        else:
            rec[at] = rec[by] = rec[event_type] = None
    return rec
