"""The pure pairing state machine: (state, event) -> (new state, outputs, expiries, counters).

One state record per resource (the Kafka key), `models.ResourceState`, holding:

* ``d``/``dh``: the dedup memory (see `dedup`);
* ``ops``: open operations by name (`models.OpenOperation`);
* ``orph``: terminal events that came without a start, by operation, waiting ``orphan_grace`` for
  it (Ironic documents that an ``.end`` can be emitted before its ``.start``; `models.WaitingEnd`);
* ``node``: the node state, for node resources (see `nodes`, `models.NodeMemory`).

Rules (docs/contracts.md, "Operations"):

* start, then terminal (``end`` -> outcome success, ``error`` -> error): one operation record.
* terminal, then start within the grace: the same record (durations are clamped at 0: in the
  Ironic race the end's timestamp can precede the start's); that start does not move the node
  state (its snapshot is of the node before the operation the end already reported).
* a start while the same operation is open: the older of the two starts is *superseded*: it is
  published as a record with outcome ``superseded`` (no end, no duration) and counted as missing
  (unless a missing_end was already raised for it); the newer one stays open. No alert: the
  replacement is itself the sign, and a missing_end already raised stays raised.
* a terminal with no start once the grace has passed (watermark): ``orphan_end`` alert, no record.
* open past its deadline (watermark): ``missing_end`` alert; the operation stays open for
  ``late_horizon``; its terminal then gives the record with ``late`` true and a ``resolved_late``
  alert. After the horizon it is forgotten.
* ``provision_set.success``: only a step, the node state moves, an open provision op stays open.

Every output carries a deterministic id (uuid5 of what identifies it), so a consumer can drop the
copies an at-least-once replay may publish again.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, cast

from .. import catalog, observed
from . import dedup, models, nodes
from .models import (
    SECOND,
    Counter,
    Expiry,
    OpenOperation,
    Output,
    ResourceState,
    Result,
    Settings,
    WaitingEnd,
    new_state,
)

__all__ = ["on_event", "on_expiry", "pending", "output_id"]

_NS = uuid.UUID("5d8c4f3e-6a43-4b6e-9a57-2f0a3c1d9e11")
_NODE_FAMILY = "baremetal.node"


_NS_BYTES = _NS.bytes


def output_id(*parts: Any) -> str:
    """uuid5(_NS, "a|b|..."), as text; written out because `uuid.UUID` costs twice the hash."""
    h = bytearray(hashlib.sha1(_NS_BYTES + "|".join("" if p is None else str(p) for p in parts).encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _data(event: dict) -> dict:
    payload = event.get("payload")
    if isinstance(payload, dict):
        data = payload.get("ironic_object.data")
        if isinstance(data, dict):
            return data
    return {}


def _opened(event: dict, ts: int, settings: Settings) -> OpenOperation:
    data = _data(event)
    return {
        "sm": event["message_id"], "st": ts, "pub": event.get("publisher_id") or "",
        "dl": ts + settings.deadline_us(event["operation"]), "al": 0,
        "tp": data.get("to_power"),
        "pps": data.get("previous_provision_state", data.get("provision_state")),
        "fe": data.get("event"),
        "node": event.get("node_uuid"),
    }


def _terminal(event: dict, ts: int, settings: Settings) -> WaitingEnd:
    data = _data(event)
    return {
        "em": event["message_id"], "et": ts, "pub": event.get("publisher_id") or "",
        "oc": "error" if event["phase"] == "error" else "success",
        "ps": data.get("provision_state"), "tp": data.get("to_power"), "fe": data.get("event"),
        "node": event.get("node_uuid"),
        "until": ts + int(settings.orphan_grace_s * SECOND),
    }


def _op_record(resource: str, operation: str, opened: OpenOperation | None, ended: WaitingEnd | None,
               outcome: str, late: bool, reconciled: bool = False) -> Output:
    st = opened["st"] if opened else None
    et = ended["et"] if ended else None
    # either side may be missing (a superseded start has no end): read both as plain mappings
    start: dict[str, Any] = cast(dict, opened) or {}
    end: dict[str, Any] = cast(dict, ended) or {}
    rec: dict[str, Any] = {
        "op_id": output_id("operation", resource, operation, start.get("sm"), end.get("em")),
        "resource_uuid": resource,
        "node_uuid": start.get("node") or end.get("node"),
        "operation": operation,
        "outcome": outcome,
        "started_at": st,
        "ended_at": et,
        "duration_ms": max(0, (et - st) // 1000) if st is not None and et is not None else None,
        "start_message_id": start.get("sm"),
        "end_message_id": end.get("em"),
        "publisher_id": start.get("pub") or end.get("pub") or "",
        "to_power": start.get("tp") or end.get("tp"),
        "previous_provision_state": start.get("pps"),
        "provision_state": end.get("ps"),
        "fsm_event": start.get("fe") or end.get("fe"),
        "late": late,
        "reconciled": reconciled,
    }
    return Output("operation", resource, rec["op_id"], rec)


def _alert(kind: str, resource: str, operation: str | None, token: Any, *, node: str | None,
           publisher: str, raised_at: int, started_at: int | None = None, deadline_at: int | None = None,
           ended_at: int | None = None, message_id: str | None = None,
           provision_state: str | None = None, detail: str = "", resolution: str | None = None,
           resolves: str | None = None) -> Output:
    rec: dict[str, Any] = {
        "alert_id": output_id(kind, resource, operation, token),
        "kind": kind,
        "resource_uuid": resource,
        "node_uuid": node,
        "operation": operation,
        "publisher_id": publisher,
        "raised_at": raised_at,
        "started_at": started_at,
        "deadline_at": deadline_at,
        "ended_at": ended_at,
        "message_id": message_id,
        "provision_state": provision_state,
        "detail": detail,
        "resolution": resolution,
        "resolves": resolves,
    }
    return Output("alert", resource, rec["alert_id"], rec)


def _orphan_alert(resource: str, operation: str, orphan: WaitingEnd, raised_at: int) -> Output:
    return _alert("orphan_end", resource, operation, orphan["em"], node=orphan.get("node"),
                  publisher=orphan["pub"], raised_at=raised_at, ended_at=orphan["et"],
                  message_id=orphan["em"],
                  detail=f"{orphan['oc']} of {operation} with no start")


def _open(res: Result, resource: str, operation: str, opened: OpenOperation) -> None:
    res.state["ops"][operation] = opened
    res.state.get("rec", {}).pop(operation, None)  # a late end from now on is this one's
    res.expiries.append(Expiry(opened["dl"], "deadline", operation, opened["sm"]))
    res.counters.append(Counter(opened["pub"], operation, "started"))


def _supersede(res: Result, resource: str, operation: str, old: OpenOperation) -> None:
    res.outputs.append(_op_record(resource, operation, old, None, "superseded", False))
    res.counters.append(Counter(old["pub"], operation, "superseded"))
    if not old["al"]:  # a raised missing_end was counted as missing already
        res.counters.append(Counter(old["pub"], operation, "missing"))


def _on_start(res: Result, resource: str, event: dict, ts: int, settings: Settings) -> None:
    operation = event["operation"]
    state = res.state
    opened = _opened(event, ts, settings)
    orphan = state["orph"].pop(operation, None)
    if orphan is not None:
        if ts <= orphan["until"]:  # the end came first (Ironic's race): this start completes it
            res.counters.append(Counter(opened["pub"], operation, "started"))
            _close(res, resource, operation, opened, orphan)
            return
        res.outputs.append(_orphan_alert(resource, operation, orphan, ts))
        res.counters.append(Counter(orphan["pub"], operation, "orphaned"))
    current = state["ops"].get(operation)
    if current is not None:
        if current["st"] > ts:  # this start is the older one: it is the superseded one
            res.counters.append(Counter(opened["pub"], operation, "started"))
            _supersede(res, resource, operation, opened)
            return
        _supersede(res, resource, operation, current)
    _open(res, resource, operation, opened)


def _close(res: Result, resource: str, operation: str, start: OpenOperation, end: WaitingEnd) -> None:
    late = bool(start["al"])
    res.outputs.append(_op_record(resource, operation, start, end, end["oc"], late))
    res.counters.append(Counter(start["pub"], operation, "ended"))
    if end["oc"] == "error":
        res.counters.append(Counter(start["pub"], operation, "errors"))
    if late:
        res.counters.append(Counter(start["pub"], operation, "late"))
        res.outputs.append(_alert(
            "resolved_late", resource, operation, start["sm"], node=start.get("node") or end.get("node"),
            publisher=start["pub"], raised_at=end["et"], started_at=start["st"], deadline_at=start["dl"],
            ended_at=end["et"], message_id=end["em"],
            detail=f"{end['oc']} {(end['et'] - start['dl']) // 1000} ms after the deadline",
        ))


def _on_terminal(res: Result, resource: str, event: dict, ts: int, settings: Settings) -> None:
    operation = event["operation"]
    state = res.state
    end = _terminal(event, ts, settings)
    start = state["ops"].pop(operation, None)
    if start is not None:
        _close(res, resource, operation, start, end)
        return
    reconciled = state.get("rec", {}).get(operation)
    if reconciled is not None and ts <= reconciled[1]:
        # the end of an operation already closed from the API's answer: that record stands
        # (docs/reconcile.md, "When they disagree"); this end changes the node state only
        del state["rec"][operation]
        res.counters.append(Counter(end["pub"], operation, "late_after_reconciled"))
        return
    previous = state["orph"].get(operation)
    if previous is not None:  # two terminals and no start: the older one will never pair
        older, end = (previous, end) if previous["et"] <= end["et"] else (end, previous)
        res.outputs.append(_orphan_alert(resource, operation, older, ts))
        res.counters.append(Counter(older["pub"], operation, "orphaned"))
    state["orph"][operation] = end
    res.expiries.append(Expiry(end["until"], "orphan", operation, end["em"]))


def on_event(state: ResourceState | None, event: dict, ts: int, settings: Settings, partition: int = 0,
             *, owned: bool = False) -> Result:
    """Fold one normalized event (event time `ts`, microseconds) into its resource's state.

    `state` is not modified unless `owned` (the caller hands over a dict it just decoded, which
    saves a copy on the hot path); the result holds the new state. A duplicate changes nothing.
    """
    if state is None:
        state = new_state(partition)
    elif not owned:
        state = _copy(state)
    state["p"] = partition
    res = Result(state)
    h = dedup.id_hash(event["message_id"])
    res.verdict = dedup.check(state, h, ts)
    if res.verdict != "new":
        res.changed = False
        return res
    dedup.remember(state, h, ts, int(settings.dedup_window_s * SECOND), settings.dedup_max_ids)
    resource = event["resource_uuid"]

    operation, phase = event.get("operation"), event.get("phase")
    orphan = state["orph"].get(operation) if operation and phase == "start" else None
    # A start that completes an end received earlier (Ironic's race) carries the node as it was
    # before the operation: the end already told the newer truth, whatever the timestamps say.
    race = orphan is not None and ts <= orphan["until"]
    is_observation = operation is None and event["event_type"] == catalog.OBSERVED_EVENT_TYPE
    stuck_since = nodes.in_transition_since(state.get("node")) if is_observation else None
    if event.get("family") == _NODE_FAMILY and not race:
        node, changed = nodes.apply(state.get("node"), event, ts)
        if changed and node is not None:  # a node changed is a node
            state["node"] = node
            res.outputs.append(Output("node_state", resource, output_id("node_state", event["message_id"]),
                                      nodes.record(resource, node)))
            since = nodes.in_transition_since(node)
            if since is not None and since == ts and node["x"] != since:
                res.expiries.append(Expiry(since + int(settings.stuck_after_s * SECOND), "stuck", "", since))

    if operation:
        if phase == "start":
            _on_start(res, resource, event, ts, settings)
        elif phase in ("end", "error"):
            _on_terminal(res, resource, event, ts, settings)
    elif is_observation:
        _on_observed(res, resource, event, stuck_since, settings)
    return res


def _on_observed(res: Result, resource: str, event: dict, stuck_since: int | None, settings: Settings) -> None:
    """What the API answered: an operation it shows finished closes, reconciled; a stuck node it
    shows moved on is healed (its state already folded). Only an operation whose missing_end was
    raised is closed: before its deadline its end may still be on the way, and the notification
    is the better witness (it has the end's own time and message)."""
    state = res.state
    obs = observed.read(event)
    observed_us = models.micros(event["payload"]["observation"]["observed_at"])
    for operation, op in list(state["ops"].items()):
        if not op["al"]:
            continue
        decided = observed.outcome(operation, op["st"], {"to_power": op.get("tp")}, obs, observed_us)
        if decided is None:
            continue
        outcome, ended_at = decided
        del state["ops"][operation]
        end: WaitingEnd = {
            "em": event["message_id"], "et": ended_at, "pub": event.get("publisher_id") or "",
            "oc": "error" if outcome == "error" else "success", "ps": obs.fields.get("provision_state"),
            "tp": None, "fe": None, "node": event.get("node_uuid"), "until": ended_at,
        }
        res.outputs.append(_op_record(resource, operation, op, end, outcome, late=True, reconciled=True))
        res.outputs.append(_alert(
            "reconciled", resource, operation, event["message_id"], node=op.get("node"), publisher=op["pub"],
            raised_at=ended_at, started_at=op["st"], deadline_at=op["dl"], ended_at=ended_at,
            message_id=event["message_id"], provision_state=end["ps"], resolution=outcome,
            resolves=output_id("missing_end", resource, operation, op["sm"]),
            detail=f"{outcome} as the API answered ({obs.about})",
        ))
        res.counters.append(Counter(op["pub"], operation, "reconciled"))
        if outcome == "error":
            res.counters.append(Counter(op["pub"], operation, "errors"))
        state.setdefault("rec", {})[operation] = [op["sm"], ended_at + int(settings.late_horizon_s * SECOND)]
    node = state.get("node")
    if node is not None and stuck_since is not None and node["x"] == stuck_since \
            and nodes.in_transition_since(node) != stuck_since:
        node["x"] = 0
        ps = node["f"].get("provision_state")
        res.outputs.append(_alert(
            "reconciled", resource, None, event["message_id"], node=resource, publisher="",
            raised_at=observed_us, started_at=stuck_since, provision_state=ps, message_id=event["message_id"],
            resolution="healed", resolves=output_id("stuck_state", resource, None, stuck_since),
            detail=f"the API shows the node in {ps!r} ({obs.about})",
        ))


def on_expiry(state: ResourceState | None, resource: str, expiry: Expiry, watermark: int, settings: Settings,
              *, owned: bool = False) -> Result:
    """The watchdog's check once the watermark passed `expiry.due`; stale checks change nothing."""
    if state is None:
        return Result(cast(ResourceState, {}), changed=False)
    if not owned:
        state = _copy(state)
    res = Result(state, changed=False)
    kind, operation, token = expiry.kind, expiry.name, expiry.token
    if kind == "deadline":
        op = state["ops"].get(operation)
        if op is None or op["sm"] != token or op["al"]:
            return res
        op["al"] = watermark
        res.changed = True
        res.outputs.append(_alert(
            "missing_end", resource, operation, op["sm"], node=op.get("node"), publisher=op["pub"],
            raised_at=watermark, started_at=op["st"], deadline_at=op["dl"], message_id=op["sm"],
            detail=f"no end within {(op['dl'] - op['st']) // SECOND} s",
        ))
        res.counters.append(Counter(op["pub"], operation, "missing"))
        res.expiries.append(Expiry(op["dl"] + int(settings.late_horizon_s * SECOND), "forget", operation, op["sm"]))
    elif kind == "forget":
        op = state["ops"].get(operation)
        if op is not None and op["sm"] == token and op["al"]:
            del state["ops"][operation]
            res.changed = True
    elif kind == "orphan":
        orphan = state["orph"].get(operation)
        if orphan is None or orphan["em"] != token:
            return res
        del state["orph"][operation]
        res.changed = True
        res.outputs.append(_orphan_alert(resource, operation, orphan, watermark))
        res.counters.append(Counter(orphan["pub"], operation, "orphaned"))
    elif kind == "stuck":
        node = state.get("node")
        since = nodes.in_transition_since(node)
        if node is None or since is None or since != token or node["x"] == since:
            return res
        node["x"] = since
        res.changed = True
        ps = node["f"].get("provision_state")
        res.outputs.append(_alert(
            "stuck_state", resource, None, since, node=resource, publisher="", raised_at=watermark,
            started_at=since, deadline_at=expiry.due, provision_state=ps,
            detail=f"in {ps!r} for more than {settings.stuck_after_s:g} s",
        ))
    return res


def pending(state: ResourceState, settings: Settings) -> list[Expiry]:
    """Every check still due for a stored state: rebuilds the watchdog after a restart or rebalance."""
    due: list[Expiry] = []
    for operation, op in state.get("ops", {}).items():
        if op["al"]:
            due.append(Expiry(op["dl"] + int(settings.late_horizon_s * SECOND), "forget", operation, op["sm"]))
        else:
            due.append(Expiry(op["dl"], "deadline", operation, op["sm"]))
    for operation, orphan in state.get("orph", {}).items():
        due.append(Expiry(orphan["until"], "orphan", operation, orphan["em"]))
    node = state.get("node")
    since = nodes.in_transition_since(node)
    if node is not None and since is not None and node["x"] != since:
        due.append(Expiry(since + int(settings.stuck_after_s * SECOND), "stuck", "", since))
    return due


def _copy(state: ResourceState) -> ResourceState:
    """A copy deep enough that the caller's state is never mutated."""
    out = state.copy()
    out["d"] = [list(e) for e in state["d"]]
    out["ops"] = {k: v.copy() for k, v in state["ops"].items()}
    out["orph"] = {k: v.copy() for k, v in state["orph"].items()}
    if "rec" in state:
        out["rec"] = {k: list(v) for k, v in state["rec"].items()}
    node = state.get("node")
    if node is not None:
        out["node"] = {"f": dict(node["f"]), "s": dict(node["s"]), "c": dict(node["c"]),
                       "n": dict(node.get("n", {})), "d": dict(node.get("d", {})), "u": node["u"], "x": node["x"]}
    return out
