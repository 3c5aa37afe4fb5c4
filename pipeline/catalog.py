"""The event catalog: one row per family and action, as data.

A row says which service emits the event, its phase (start, end, error, success, or none), which
paired operation it belongs to, the default deadline for that operation's end, and where the
resource UUID and the node UUID live in the payload.

Rules the table encodes (docs/contracts.md, "Operations"):

* Ironic ``X.start`` / ``X.end`` / ``X.error``: phases start/end/error of operation ``X``
  (e.g. ``baremetal.node.power_set``). ``X.success`` has phase success and no operation, even
  ``provision_set.success``: the agents treat it as a step of an open provision operation.
* Glance ``image.prepare`` starts operation ``image.upload``; ``image.upload`` ends it (INFO) or
  fails it (ERROR). ``task.run`` starts operation ``task``; ``task.success`` ends it,
  ``task.failure`` fails it. ``task.processing`` is progress: operation ``task``, phase null (it
  neither opens nor closes anything). Other Glance events are single: phase success, no operation.
* A Glance event at ERROR or CRITICAL priority (a text payload) has phase error: for
  ``image.prepare`` / ``image.upload`` / ``task.*`` that fails the operation. At WARN it has phase
  null (Glance documents WARN text payloads but sends none; a warning is not an outcome).
* An event type not in the table is still valid: family = all segments before the action (the last
  segment, or the last two when the last is a status start/end/error/success), service = the first
  segment (``task.*`` and ``metadef_*`` are Glance's: service ``image``). Unknown
  ``baremetal.*.start/end/error`` pair by shape like the known ones (operation
  ``X``, deadline `DEFAULT_DEADLINE_S`); other unknown events get no operation.

Observations (``pipeline.observed``, written by ``pipeline reconcile`` from the owning service's
API, docs/reconcile.md) are rows too: `OBSERVABLE` says per family which API resource answers for
it and which fields are read; `FINISHES` says per operation how that answer shows the operation
finished (`streams/observations.py` reads these tables, with no branch per operation).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Literal, get_args

__all__ = [
    "DEFAULT_DEADLINE_S",
    "FINISHES",
    "IRONIC_TRANSITIONAL",
    "OBSERVABLE",
    "OBSERVED_EVENT_TYPE",
    "OBSERVER",
    "EventClass",
    "Finish",
    "OPERATIONS",
    "OPERATION_FAMILY",
    "Observable",
    "ROWS",
    "STATUSES",
    "Row",
    "classify",
    "known_event_types",
]

Path = tuple[str, ...]  # keys from the payload root to a value

Phase = Literal["start", "end", "error", "success"]
STATUSES: tuple[Phase, ...] = get_args(Phase)
_PAIR_PHASES = frozenset({"start", "end", "error"})
# Glance sends text instead of the resource at WARN and ERROR: an ERROR is the failure of what the
# event reports; a WARN reports no outcome, so it neither opens nor closes an operation.
_GLANCE_PHASE_BY_PRIORITY: dict[str, Phase | None] = {"error": "error", "critical": "error", "warn": None}

# Deadline for an operation that is paired by shape but has no row of its own.
DEFAULT_DEADLINE_S = 600.0

_IRONIC_UUID: tuple[Path, ...] = (("ironic_object.data", "uuid"),)
_IRONIC_NODE: tuple[Path, ...] = (("ironic_object.data", "node_uuid"),)
_GLANCE_ID: tuple[Path, ...] = (("id",),)
_GLANCE_IMAGE_ID: tuple[Path, ...] = (("image_id",),)
# The code sends the task as `id`; the admin guide documents `task_id`. Both are the task.
_GLANCE_TASK_ID: tuple[Path, ...] = (("id",), ("task_id",))
# For event types nobody described: the places OpenStack payloads usually keep their subject.
_GUESS_UUID: tuple[Path, ...] = (
    ("ironic_object.data", "uuid"),
    ("nova_object.data", "uuid"),
    ("uuid",),
    ("id",),
    ("resource_id",),
    ("instance_id",),
    ("image_id",),
    ("node_uuid",),
)
_GUESS_NODE: tuple[Path, ...] = (("ironic_object.data", "node_uuid"), ("node_uuid",))

_SELF = "self"  # node_paths marker: the resource is the node


@dataclass(frozen=True, slots=True)
class Row:
    """One family+action of the catalog."""

    service: str
    family: str
    action: str
    statuses: tuple[Phase, ...]  # Ironic status suffixes; () for Glance names without a suffix
    phase: Phase | None = None  # Glance only: the phase at INFO priority
    operation: str | None = None  # Glance only; Ironic pairs derive `family.action`
    deadline_s: float | None = None  # default deadline for the end of the operation
    resource_paths: tuple[Path, ...] = ()
    node_paths: tuple[Path, ...] | str = ()  # or _SELF


@dataclass(frozen=True, slots=True)
class EventClass:
    service: str
    family: str
    action: str
    phase: Phase | None
    operation: str | None
    deadline_s: float | None  # default deadline for the end of `operation` (None if not paired)
    resource_paths: tuple[Path, ...]  # alternatives, the first that holds a value wins
    node_paths: tuple[Path, ...]
    node_is_resource: bool  # baremetal.node: the node UUID is the resource UUID
    uuid_from_text: bool  # a string payload: take the first UUID in the text
    known: bool  # the event type has a row in the catalog


# --- the table ---------------------------------------------------------------------------------

_CRUD = ("create", "update", "delete")
_SES: tuple[Phase, ...] = ("start", "end", "error")

# Ironic API CRUD: synchronous API calls, a minute is generous.
_CRUD_DEADLINE_S = 60.0

# family -> (node paths, deadline). `deploytemplate` is what the code emits, `deploy_template`
# what the admin guide spells.
_IRONIC_CRUD_FAMILIES: dict[str, tuple[tuple[Path, ...] | str, float]] = {
    "node": (_SELF, _CRUD_DEADLINE_S),
    "port": (_IRONIC_NODE, _CRUD_DEADLINE_S),
    "portgroup": (_IRONIC_NODE, _CRUD_DEADLINE_S),
    "chassis": ((), _CRUD_DEADLINE_S),
    "deploytemplate": ((), _CRUD_DEADLINE_S),
    "deploy_template": ((), _CRUD_DEADLINE_S),
    "volumeconnector": (_IRONIC_NODE, _CRUD_DEADLINE_S),
    "volumetarget": (_IRONIC_NODE, _CRUD_DEADLINE_S),
    "allocation": (_IRONIC_NODE, _CRUD_DEADLINE_S),
    "runbook": ((), _CRUD_DEADLINE_S),
    "inspectionrule": ((), _CRUD_DEADLINE_S),
}

# Node actions of the conductor (and the API for maintenance): statuses, deadline.
_IRONIC_NODE_ACTIONS: dict[str, tuple[tuple[Phase, ...], float | None]] = {
    "maintenance_set": (_SES, 60.0),  # API, synchronous
    "console_set": (_SES, 300.0),  # starting a console (socat/shellinabox) can take a while
    "console_restore": (_SES, 300.0),
    "console_stop": (_SES, 300.0),
    "power_set": (_SES, 300.0),  # BMC power actions with retries; Ironic waits 60 s per try
    "power_state_corrected": (("success",), None),  # single event, never paired
    "provision_set": (("start", "end", "success", "error"), 4 * 3600.0),  # deploy/clean of big disks
}

_GLANCE_UPLOAD_DEADLINE_S = 3600.0
_GLANCE_TASK_DEADLINE_S = 86400.0  # an import task may copy to several stores for hours

# (family, action, phase at INFO, operation, resource paths)
_GLANCE_EVENTS: tuple[tuple[str, str, Phase | None, str | None, tuple[Path, ...]], ...] = (
    ("image", "create", "success", None, _GLANCE_ID),
    ("image", "prepare", "start", "image.upload", _GLANCE_ID),
    ("image", "upload", "end", "image.upload", _GLANCE_ID),
    ("image", "activate", "success", None, _GLANCE_ID),
    ("image", "send", "success", None, _GLANCE_IMAGE_ID),
    ("image", "update", "success", None, _GLANCE_ID),
    ("image", "delete", "success", None, _GLANCE_ID),
    ("image.member", "create", "success", None, _GLANCE_IMAGE_ID),
    ("image.member", "update", "success", None, _GLANCE_IMAGE_ID),
    ("image.member", "delete", "success", None, _GLANCE_IMAGE_ID),
    ("task", "create", "success", None, _GLANCE_TASK_ID),
    ("task", "run", "start", "task", _GLANCE_TASK_ID),
    ("task", "processing", None, "task", _GLANCE_TASK_ID),
    ("task", "success", "end", "task", _GLANCE_TASK_ID),
    ("task", "failure", "error", "task", _GLANCE_TASK_ID),
    ("task", "delete", "success", None, _GLANCE_TASK_ID),
    # metadata definitions are named, not UUID-keyed: resource_uuid stays null
    ("metadef_namespace", "create", "success", None, ()),
    ("metadef_namespace", "update", "success", None, ()),
    ("metadef_namespace", "delete", "success", None, ()),
    ("metadef_namespace", "delete_objects", "success", None, ()),
    ("metadef_namespace", "delete_properties", "success", None, ()),
    ("metadef_namespace", "delete_tags", "success", None, ()),
    ("metadef_object", "create", "success", None, ()),
    ("metadef_object", "update", "success", None, ()),
    ("metadef_object", "delete", "success", None, ()),
    ("metadef_property", "create", "success", None, ()),
    ("metadef_property", "update", "success", None, ()),
    ("metadef_property", "delete", "success", None, ()),
    ("metadef_resource_type", "create", "success", None, ()),
    ("metadef_resource_type", "delete", "success", None, ()),
    ("metadef_tag", "create", "success", None, ()),
    ("metadef_tag", "update", "success", None, ()),
    ("metadef_tag", "delete", "success", None, ()),
)


def _build_rows() -> tuple[Row, ...]:
    rows: list[Row] = []
    for obj, (node_paths, deadline) in _IRONIC_CRUD_FAMILIES.items():
        for action in _CRUD:
            rows.append(
                Row("baremetal", f"baremetal.{obj}", action, _SES, deadline_s=deadline,
                    resource_paths=_IRONIC_UUID, node_paths=node_paths)
            )
    for action, (statuses, node_deadline) in _IRONIC_NODE_ACTIONS.items():
        rows.append(
            Row("baremetal", "baremetal.node", action, statuses, deadline_s=node_deadline,
                resource_paths=_IRONIC_UUID, node_paths=_SELF)
        )
    for family, action, phase, operation, paths in _GLANCE_EVENTS:
        glance_deadline = {"image.upload": _GLANCE_UPLOAD_DEADLINE_S, "task": _GLANCE_TASK_DEADLINE_S}.get(
            operation or ""
        )
        rows.append(Row("image", family, action, (), phase, operation, glance_deadline, paths))
    return tuple(rows)


ROWS: tuple[Row, ...] = _build_rows()


def _operations() -> Mapping[str, float]:
    ops: dict[str, float] = {}
    for row in ROWS:
        if row.statuses and any(s in _PAIR_PHASES for s in row.statuses) and row.deadline_s:
            ops[f"{row.family}.{row.action}"] = row.deadline_s
        elif row.operation and row.deadline_s:
            ops[row.operation] = row.deadline_s
    return MappingProxyType(ops)


OPERATIONS: Mapping[str, float] = _operations()  # operation name -> default deadline in seconds

# event type -> (row, status or None)
_BY_EVENT_TYPE: dict[str, tuple[Row, Phase | None]] = {}
for _row in ROWS:
    if _row.statuses:
        for _status in _row.statuses:
            _BY_EVENT_TYPE[f"{_row.family}.{_row.action}.{_status}"] = (_row, _status)
    else:
        _BY_EVENT_TYPE[f"{_row.family}.{_row.action}"] = (_row, None)
del _row


def known_event_types() -> tuple[str, ...]:
    """Every event type with a row in the catalog, in table order."""
    return tuple(_BY_EVENT_TYPE)


# --- classification ----------------------------------------------------------------------------


def _node_paths(row: Row) -> tuple[tuple[Path, ...], bool]:
    if row.node_paths == _SELF:
        return (), True
    return row.node_paths, False  # type: ignore[return-value]


def _from_row(row: Row, status: Phase | None, priority: str) -> EventClass:
    node_paths, node_is_resource = _node_paths(row)
    if status is not None:  # Ironic: the status suffix decides, priority follows it
        phase: Phase | None = status
        operation = f"{row.family}.{row.action}" if status in _PAIR_PHASES else None
        deadline = row.deadline_s if operation else None
    else:
        phase = _GLANCE_PHASE_BY_PRIORITY.get(priority, row.phase)
        operation = row.operation
        deadline = row.deadline_s
    return EventClass(
        service=row.service,
        family=row.family,
        action=row.action,
        phase=phase,
        operation=operation,
        deadline_s=deadline,
        resource_paths=row.resource_paths,
        node_paths=node_paths,
        node_is_resource=node_is_resource,
        uuid_from_text=bool(row.resource_paths),
        known=True,
    )


def _by_shape(event_type: str) -> EventClass:
    segments = event_type.split(".")
    status = next((p for p in STATUSES if len(segments) > 1 and segments[-1] == p), None)
    head = segments[:-1] if status else segments
    action = head[-1]
    family = ".".join(head[:-1]) or head[0]
    service = _service_of(segments[0])
    operation = None
    deadline = None
    if service == "baremetal" and status in _PAIR_PHASES:
        operation, deadline = f"{family}.{action}", DEFAULT_DEADLINE_S
    is_node = family == "baremetal.node"
    return EventClass(
        service=service,
        family=family,
        action=action,
        phase=status,
        operation=operation,
        deadline_s=deadline,
        resource_paths=_IRONIC_UUID if service == "baremetal" else _GUESS_UUID,
        node_paths=() if is_node else _GUESS_NODE if service == "baremetal" else (),
        node_is_resource=is_node,
        uuid_from_text=True,
        known=False,
    )


# First segments that belong to a service of another name (Glance's tasks and metadata
# definitions), so a new event type of theirs lands under the same service as the known ones.
_SERVICE_BY_FIRST_SEGMENT: dict[str, str] = {"task": "image"}
_SERVICE_BY_PREFIX: tuple[tuple[str, str], ...] = (("metadef_", "image"),)


def _service_of(first: str) -> str:
    service = _SERVICE_BY_FIRST_SEGMENT.get(first)
    if service is not None:
        return service
    for prefix, service in _SERVICE_BY_PREFIX:
        if first.startswith(prefix):
            return service
    return first


@lru_cache(maxsize=4096)
def classify(event_type: str, priority: str) -> EventClass:
    """Classify an event type at a (lower-case) priority. Never raises for a dotted name."""
    hit = _BY_EVENT_TYPE.get(event_type)
    if hit is not None:
        return _from_row(hit[0], hit[1], priority)
    return _by_shape(event_type)


# --- observations: what `pipeline reconcile` asks the owning service ---------------------------

OBSERVED_EVENT_TYPE = "pipeline.observed"  # reserved: a notification arriving with it is dead-lettered
OBSERVER = "pipeline.reconciler"  # the publisher_id of every observation, whichever replica wrote it

# Ironic provision states a node passes through on its own (ironic/common/states.py: the *ING and
# *WAIT states, and the holds waiting for an operator): an operation in one has not finished.
IRONIC_TRANSITIONAL = frozenset({
    "deploying", "wait call-back", "deploy hold",
    "cleaning", "clean wait", "clean hold",
    "inspecting", "inspect wait",
    "deleting", "rescuing", "rescue wait", "unrescuing",
    "adopting", "verifying",
    "servicing", "service wait", "service hold",
})
# ... and the states an operation that failed leaves it in
_IRONIC_FAILED = frozenset({
    "deploy failed", "clean failed", "inspect failed", "rescue failed", "unrescue failed", "adopt failed",
    "service failed", "error",
})
_NODE_FIELDS = ("uuid", "power_state", "target_power_state", "provision_state", "target_provision_state",
                "maintenance", "maintenance_reason", "last_error", "updated_at", "created_at")


@dataclass(frozen=True, slots=True)
class Observable:
    """A family whose resources the reconciler can ask about: openstacksdk's proxy (the service
    type), the API path of one resource (``{id}``) and of the list the sweep pages, the
    microversion (Ironic: 1.8 is the first with ``fields``), the fields read, and the payload key
    they are carried under, as in the service's own notifications (None: at the payload's root, as
    Glance does)."""

    service: str
    path: str
    fields: tuple[str, ...]
    wrapper: str | None
    microversion: str | None = None
    listing: str | None = None  # the list's path and the key of its items, for the sweep


OBSERVABLE: Mapping[str, Observable] = MappingProxyType({
    "baremetal.node": Observable("baremetal", "/nodes/{id}", _NODE_FIELDS, "ironic_object.data", "1.8", "/nodes"),
    "image": Observable("image", "/images/{id}", ("id", "status", "updated_at", "created_at", "size", "checksum"), None),
    "task": Observable("image", "/tasks/{id}", ("id", "status", "message", "updated_at", "created_at"), None),
})


def _operation_families() -> Mapping[str, str]:
    out: dict[str, str] = {}
    for row in ROWS:
        if row.operation:
            out[row.operation] = row.family
        elif any(s in _PAIR_PHASES for s in row.statuses):
            out[f"{row.family}.{row.action}"] = row.family
    return MappingProxyType(out)


OPERATION_FAMILY: Mapping[str, str] = _operation_families()  # operation -> the family of its resource


@dataclass(frozen=True, slots=True)
class Finish:
    """How the API's answer shows that an open operation finished.

    The answer counts only when the resource was updated at or after the operation's start. Then:
    `target` set (Ironic's target_* while the conductor works) or `state` in `running`: still
    running; `state` in `failed`: error; otherwise success, unless `expect` names what the start
    asked for (power_set's ``to_power``, read through `reached`) and the state is not that. A
    `state` of None: the operation is a synchronous API call, finished once the answer is newer.
    A 404 closes it as `gone` (a delete's success)."""

    state: str | None = None
    target: str | None = None
    running: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    expect: str | None = None
    reached: Mapping[str, str] | None = None
    gone: str = "gone"


# power_set's to_power -> the power_state it ends in
_POWER_REACHED = MappingProxyType({
    "power on": "power on", "power off": "power off", "rebooting": "power on", "soft rebooting": "power on",
    "soft power off": "power off",
})
_SYNCHRONOUS = Finish()

FINISHES: Mapping[str, Finish] = MappingProxyType({
    "baremetal.node.power_set": Finish("power_state", "target_power_state", failed=frozenset({"error"}),
                                       expect="to_power", reached=_POWER_REACHED),
    "baremetal.node.provision_set": Finish("provision_state", "target_provision_state", IRONIC_TRANSITIONAL,
                                           _IRONIC_FAILED),
    "baremetal.node.maintenance_set": _SYNCHRONOUS,
    "baremetal.node.console_set": _SYNCHRONOUS,
    "baremetal.node.create": _SYNCHRONOUS,
    "baremetal.node.update": _SYNCHRONOUS,
    "baremetal.node.delete": Finish(gone="success"),
    "image.upload": Finish("status", running=frozenset({"queued", "saving", "uploading", "importing"}),
                           failed=frozenset({"killed"})),
    "task": Finish("status", running=frozenset({"pending", "processing"}), failed=frozenset({"failure"})),
})
