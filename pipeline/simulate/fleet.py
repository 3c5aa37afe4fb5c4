"""The fleet's lifecycle model: bare-metal nodes (with ports and portgroups) and Glance images living
realistic lives. Pure: a seeded RNG and a simulated clock in, notifications out, no I/O.

The clock. This is a discrete-event simulation: every node and every image is a generator that
says what it emits now and how many simulated seconds pass until its next step; a heap orders all
pending steps by simulated time. The event-time clock is the time of the step being run, so
simulated durations are exactly the ones drawn (power on 5-30 s, deploy 5-20 min, clean 10-40 min,
inspect 3-10 min, ...) whatever the output rate. How fast that clock runs against the wall clock is
the caller's choice: publishing at a fixed `--rate` makes simulated time run as fast as the fleet's
own event density allows (1,000 nodes give a few events per simulated second, so 1,000 events/s of
wall time is a few minutes of fleet life per wall second); `--clock-speed` instead paces by
simulated time. Either way timestamps only move forward and durations stay realistic.

Stopping. `close()` makes every life finish the operation it is in and start no new one, so every
operation started has its terminal event in the stream (unless the faults stage drops it). `sweep()`
then jumps the clock past every operation's deadline and has every node and image emit one more
event, so event-time watermarks pass every deadline on every partition: a missing end becomes due.
"""
from __future__ import annotations

import heapq
import itertools
import random
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pipeline import catalog

from . import payloads

__all__ = ["Event", "Fleet", "Image", "Node", "Operation"]

Gen = Iterator[float]  # a life: yields simulated seconds to wait before its next step

# Roles of an event within its operation.
START, STEP, END, ERROR, SINGLE = "start", "step", "end", "error", "single"
TERMINAL = frozenset({END, ERROR})

IRONIC_API = "ironic-api.api-1.example.org"
GLANCE_APIS = ("image.glance-api-1", "image.glance-api-2")

# Seconds, (low, high) of a uniform draw.
POWER_S = (5.0, 30.0)
DEPLOY_S = (300.0, 1200.0)
CLEAN_S = (600.0, 2400.0)
INSPECT_S = (180.0, 600.0)
VERIFY_S = (10.0, 60.0)
API_S = (0.05, 0.6)  # an API call's start -> end
UPLOAD_S = (30.0, 600.0)
MAINTENANCE_S = (600.0, 7200.0)
# How far past a deadline event time must move before the agents' watchdog surely fired: their
# watermark lateness (60 s by default) plus the gap to the next event on the same partition.
SETTLE_S = 600.0

# Failure odds per attempt.
P_DEPLOY_FAIL = 0.06
P_CLEAN_FAIL = 0.03
P_INSPECT_FAIL = 0.03
P_POWER_FAIL = 0.02
P_UPLOAD_FAIL = 0.06
P_TASK_FAIL = 0.08
P_PARTIAL_DOWNLOAD = 0.02

_ADMIN_CONTEXT = {  # ironic.common.context.get_admin_context(), after redacted_copy + to_dict
    "user": None, "project_id": None, "system_scope": None, "project": None, "domain": None,
    "user_domain": None, "project_domain": None, "is_admin": True, "read_only": False,
    "show_deleted": False, "auth_token": None, "request_id": None, "global_request_id": None,
    "resource_uuid": None, "roles": [], "user_identity": "- - - - -", "is_admin_project": True,
    "auth_token_info": None,
}

_LAST_ERRORS = {
    "deploy": "Timeout reached while waiting for callback for node {uuid}",
    "clean": "Failed to tear down from cleaning for node {uuid}, reason: Agent returned error for clean step",
    "inspect": "Failed to inspect hardware. Reason: timeout waiting for the ramdisk to report",
    "power": "IPMI call failed: power status.",
}
# glance/notifier.py ImageProxy.set_data: the store errors do not name the image, the others do.
_UPLOAD_ERRORS = (
    "Image storage media is full: There is not enough disk space on the image storage media.",
    "Insufficient permissions on image storage media: Permission to write image storage media denied.",
    "Failed to upload image data for image {id} due to internal error: Connection reset by peer",
    "Failed to upload image data for image {id} due to HTTP error: 503 Service Unavailable",
    "Cannot save data for image {id}: Size of uploaded data does not match the declared size",
)


@dataclass(slots=True)
class Operation:
    """Ground truth of one paired operation (a start and its terminal event)."""

    operation: str  # the catalog's operation name, e.g. baremetal.node.power_set
    resource_uuid: str
    node_uuid: str | None
    started_at: datetime
    deadline_s: float
    start_message_id: str = ""
    outcome: str | None = None  # "end" | "error" once its terminal event was emitted
    ended_at: datetime | None = None
    end_message_id: str | None = None
    end_dropped: bool = False
    end_anonymous: bool = False  # its terminal event names no resource (a Glance store error text)
    end_duplicated: bool = False
    end_delayed: bool = False
    duplicated: bool = False  # any of its events was sent twice
    exempt: bool = False  # the closing sweep: never subject to faults

    @property
    def expected(self) -> str:
        """What the agents should conclude: missing_end when the terminal event never arrives, or
        arrives without saying whose end it is."""
        return "missing_end" if self.end_dropped or self.end_anonymous else (self.outcome or "open")

    def as_truth(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "resource_uuid": self.resource_uuid,
            "node_uuid": self.node_uuid,
            "start_message_id": self.start_message_id,
            "end_message_id": self.end_message_id,
            "started_at": payloads.oslo_timestamp(self.started_at),
            "ended_at": payloads.oslo_timestamp(self.ended_at) if self.ended_at else None,
            "deadline_s": self.deadline_s,
            "outcome": self.outcome,
            "end_dropped": self.end_dropped,
            "end_anonymous": self.end_anonymous,
            "end_duplicated": self.end_duplicated,
            "end_delayed": self.end_delayed,
            "duplicated": self.duplicated,
            "expected": self.expected,
        }


class Event(NamedTuple):
    """One notification as its service would hand it to oslo's Notifier."""

    event_type: str
    priority: str  # upper case, as on the wire
    publisher_id: str
    payload: Any
    timestamp: datetime  # naive UTC, the simulated clock
    message_id: str
    service: str  # "ironic" | "glance": which exchange it goes to
    context: dict[str, Any] | None  # Ironic's serialized request context; Glance sends none
    op: Operation | None
    role: str


@dataclass(slots=True)
class Port:
    uuid: str
    node_uuid: str
    address: str
    portgroup_uuid: str | None
    local_link_connection: dict[str, str]
    created_at: datetime
    updated_at: datetime | None = None
    pxe_enabled: bool = True


@dataclass(slots=True)
class Portgroup:
    uuid: str
    node_uuid: str
    address: str
    name: str
    created_at: datetime
    updated_at: datetime | None = None


@dataclass(slots=True)
class Node:
    """The node's fields that notifications carry (NodePayload + CRUD extras)."""

    uuid: str
    name: str
    conductor: str
    bmc_address: str
    created_at: datetime
    updated_at: datetime
    provision_state: str = "enroll"
    target_provision_state: str | None = None
    provision_updated_at: datetime | None = None
    power_state: str | None = None
    target_power_state: str | None = None
    maintenance: bool = False
    console_enabled: bool = False
    maintenance_reason: str | None = None
    instance_uuid: str | None = None
    image_id: str | None = None
    last_error: str | None = None
    inspection_started_at: datetime | None = None
    inspection_finished_at: datetime | None = None
    resource_class: str = "baremetal.general"
    owner: str | None = None
    chassis_uuid: str | None = None
    ports: list[Port] = field(default_factory=list)
    portgroups: list[Portgroup] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    traits: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    # NodePayload fields that never change in the simulation
    clean_step = property(lambda self: {})
    deploy_step = property(lambda self: {})
    conductor_group = property(lambda self: "")
    description = property(lambda self: None)
    disable_power_off = property(lambda self: False)
    driver = property(lambda self: "ipmi")
    boot_mode = property(lambda self: "uefi")
    secure_boot = property(lambda self: None)
    fault = property(lambda self: None)
    bios_interface = property(lambda self: "no-bios")
    boot_interface = property(lambda self: "ipxe")
    console_interface = property(lambda self: "no-console")
    deploy_interface = property(lambda self: "direct")
    inspect_interface = property(lambda self: "agent")
    management_interface = property(lambda self: "ipmitool")
    network_interface = property(lambda self: "neutron")
    power_interface = property(lambda self: "ipmitool")
    raid_interface = property(lambda self: "no-raid")
    rescue_interface = property(lambda self: "no-rescue")
    storage_interface = property(lambda self: "noop")
    vendor_interface = property(lambda self: "ipmitool")
    lessee = property(lambda self: None)
    protected = property(lambda self: False)
    protected_reason = property(lambda self: None)
    retired = property(lambda self: False)
    retired_reason = property(lambda self: None)


@dataclass(slots=True)
class Image:
    id: str
    name: str
    owner: str
    created_at: datetime
    updated_at: datetime
    size: int
    disk_format: str = "raw"
    visibility: str = "shared"
    status: str = "queued"
    checksum: str | None = None
    virtual_size: int | None = None
    members: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Task:
    id: str
    owner: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    type: str = "api_image_import"
    status: str = "pending"


class Fleet:
    """N nodes and M images; iterate `events()` for the notification stream in simulated-time order."""

    def __init__(self, nodes: int, images: int, *, seed: int = 0, start: datetime,
                 conductors: int = 3, think_s: float = 1800.0, keep_operations: bool = True) -> None:
        self.rng = random.Random(seed)
        self._ids = random.Random(seed ^ 0x5EED)  # uuids from their own stream: the lives stay the same
        self.start = start.replace(tzinfo=None)
        self.t = 0.0  # simulated seconds since start
        self.think_s = think_s
        self.conductors = [f"ironic-conductor.conductor-{i + 1}.example.org" for i in range(conductors)]
        self.closing = False
        self.keep_operations = keep_operations
        self.operations: list[Operation] = []
        self.counts = {"started": 0, "ended": 0, "errored": 0, "anonymous": 0, "events": 0}
        self._horizon = 0.0  # latest start + deadline of any operation, in simulated seconds
        self._seq = itertools.count()
        self._heap: list[tuple[float, int, Gen]] = []
        self._out: list[Event] = []
        self._terminals: list[Operation] = []  # terminal events emitted since the last guard check
        self._dropped: dict[str, list[Operation]] = {}  # resource -> operations whose end was lost
        self._crud_ops: dict[tuple[str, str, str], tuple[Operation, dict[str, Any]]] = {}
        self.nodes: list[Node] = []
        self.images: list[Image] = []
        self.projects = [f"proj-{self._hex(8)}" for _ in range(12)]
        for i in range(nodes):
            state = self.rng.choices(("new", "manageable", "available", "active"), (5, 5, 25, 65))[0]
            node = self._new_node(i, state)
            self.nodes.append(node)
            self._spawn(self._node_life(node, i, state == "new"), self.rng.uniform(0.0, think_s))
        for i in range(images):
            new = self.rng.random() < 0.3
            image = self._new_image(i, active=not new)
            self.images.append(image)
            self._spawn(self._image_life(image, i, new), self.rng.uniform(0.0, think_s))

    # --- clock and scheduling ------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t)

    def _spawn(self, life: Gen, delay: float) -> None:
        heapq.heappush(self._heap, (self.t + delay, next(self._seq), life))

    def close(self) -> None:
        """Start no new operation; the ones running finish."""
        self.closing = True

    def events(self) -> Iterator[Event]:
        """The stream, in simulated-time order, until every life has stopped (after `close()`)."""
        heap = self._heap
        while heap:
            self.t, _, life = heapq.heappop(heap)
            try:
                delay = next(life)
            except StopIteration:
                delay = None
            if self._out:
                out, self._out = self._out, []
                self.counts["events"] += len(out)
                yield from out
            if delay is not None:
                heapq.heappush(heap, (self.t + delay, next(self._seq), life))

    def sweep(self, margin_s: float = SETTLE_S) -> Iterator[Event]:
        """After the lives stopped: jump past every deadline, then one operation per node (an
        operator enables every console: `console_set`, used nowhere else, so it never supersedes an
        open operation) and one `image.update` per image. Exempt from faults."""
        self.t = max(self.t, self._horizon) + margin_s
        step = 30.0 / max(1, len(self.nodes) + len(self.images))
        for node in self.nodes:
            ctx = self._api_context()
            op = self._open("baremetal.node.console_set", node.uuid, node.uuid, exempt=True)
            self._emit("baremetal.node.console_set.start", "INFO", node.conductor,
                       payloads.node_payload("NodePayload", node), "ironic", ctx, op, START)
            self.t += step
            node.console_enabled, node.updated_at = True, self.now
            self._emit("baremetal.node.console_set.end", "INFO", node.conductor,
                       payloads.node_payload("NodePayload", node), "ironic", ctx, op, END)
        for image in self.images:
            self.t += step
            self._glance("image.update", "INFO", payloads.image_payload(image))
        out, self._out = self._out, []
        self.counts["events"] += len(out)
        yield from out

    def census(self) -> Iterator[Event]:
        """One event per node, nothing else: after a power outage the conductors' power sync finds
        every node in another power state than recorded (`power_state_corrected.success`, a single
        event with the node's full state). The benchmark's memory-at-N-nodes stage sends this."""
        step = 60.0 / max(1, len(self.nodes))
        for node in self.nodes:
            self.t += step
            previous = node.power_state
            node.power_state, node.updated_at = "power off", self.now
            self._emit("baremetal.node.power_state_corrected.success", "INFO", node.conductor,
                       payloads.node_payload("NodeCorrectedPowerStatePayload", node, from_power=previous),
                       "ironic", self._conductor_context(), None, SINGLE)
            out, self._out = self._out, []
            self.counts["events"] += 1
            yield from out

    def _guard(self, resource_uuid: str) -> float:
        """Seconds the resource waits before its next operation: while an operation of its own has
        lost its end (dropped, or an error text naming no resource) and is not yet past deadline + SETTLE_S, a new start of the same operation
        would supersede it (the agents then record it as superseded, not missing), and the truth
        could not say in advance which of the two the agents will see. Waiting keeps it exact."""
        for op in self._terminals:
            if op.end_dropped or op.end_anonymous:
                self._dropped.setdefault(op.resource_uuid, []).append(op)
        self._terminals.clear()
        ops = self._dropped.get(resource_uuid)
        if not ops:
            return 0.0
        wait = max((op.started_at - self.start).total_seconds() + op.deadline_s + SETTLE_S for op in ops) - self.t
        if wait <= 0:
            del self._dropped[resource_uuid]
            return 0.0
        return wait

    # --- ids and builders ----------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _hex(self, n: int) -> str:
        return f"{self._ids.getrandbits(4 * n):0{n}x}"

    def _mac(self) -> str:
        return "52:54:00:" + ":".join(f"{self._ids.getrandbits(8):02x}" for _ in range(3))

    def _new_node(self, i: int, state: str) -> Node:
        created = self.start - timedelta(days=self.rng.uniform(1, 400)) if state != "new" else self.start
        rack, unit = divmod(i, 40)
        node = Node(
            uuid=self._uuid(), name=f"bm-r{rack:03d}-u{unit + 1:02d}",
            conductor=self.conductors[i % len(self.conductors)],
            bmc_address=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            created_at=created, updated_at=created, provision_updated_at=created,
            resource_class=self.rng.choice(("baremetal.general", "baremetal.gpu", "baremetal.storage")),
            chassis_uuid=None,
            properties={"cpus": self.rng.choice((32, 64, 128)), "memory_mb": self.rng.choice((262144, 524288)),
                        "local_gb": self.rng.choice((900, 1800, 3600)), "cpu_arch": "x86_64"},
            traits=["HW_CPU_X86_AVX512F"] if self.rng.random() < 0.5 else [],
            extra={"rack": f"r{rack:03d}"},
        )
        if state != "new":
            node.provision_state = state
            node.power_state = "power on" if state == "active" else "power off"
            node.inspection_started_at = created + timedelta(minutes=5)
            node.inspection_finished_at = created + timedelta(minutes=11)
            self._attach_ports(node, created)
            if state == "active":
                node.instance_uuid = self._uuid()
                node.owner = self.rng.choice(self.projects)
        return node

    def _attach_ports(self, node: Node, at: datetime) -> None:
        bonded = self.rng.random() < 0.5
        pg = Portgroup(self._uuid(), node.uuid, self._mac(), f"{node.name}-bond0", at) if bonded else None
        node.portgroups = [pg] if pg else []
        node.ports = [
            Port(self._uuid(), node.uuid, self._mac(), pg.uuid if pg else None,
                 {"switch_id": "0a:1b:2c:3d:4e:5f", "port_id": f"Ethernet1/{k + 1}", "switch_info": f"tor-{node.name[4:7]}"},
                 at)
            for k in range(2)
        ]

    def _new_image(self, i: int, active: bool) -> Image:
        created = self.start - timedelta(days=self.rng.uniform(1, 200)) if active else self.start
        size = self.rng.randrange(500, 20_000) * 1024 * 1024
        image = Image(id=self._uuid(), name=f"{self.rng.choice(('ubuntu-24.04', 'rhel-9.6', 'debian-13', 'rocky-9'))}-bm-{i}",
                      owner=self.rng.choice(self.projects), created_at=created, updated_at=created, size=size,
                      disk_format=self.rng.choice(("raw", "qcow2")))
        if active:
            image.status, image.checksum, image.virtual_size = "active", self._hex(32), size
        return image

    def _api_context(self) -> dict[str, Any]:
        user, project = self._hex(32), self.rng.choice(self.projects)
        return {**_ADMIN_CONTEXT, "user": user, "project_id": project, "project": project, "is_admin": False,
                "request_id": f"req-{self._uuid()}", "roles": ["admin", "member", "reader"],
                "user_identity": f"{user} {project} - - -", "is_admin_project": True}

    def _conductor_context(self) -> dict[str, Any]:
        return {**_ADMIN_CONTEXT, "request_id": f"req-{self._uuid()}"}

    # --- emitting ------------------------------------------------------------------------------

    def _emit(self, event_type: str, priority: str, publisher: str, payload: Any, service: str,
              context: dict[str, Any] | None, op: Operation | None, role: str) -> Event:
        event = Event(event_type, priority, publisher, payload, self.now, self._uuid(), service, context, op, role)
        if role == START and op is not None:
            op.start_message_id = event.message_id
        elif role in TERMINAL and op is not None:
            op.outcome, op.ended_at, op.end_message_id = role, event.timestamp, event.message_id
            self._terminals.append(op)
            self.counts["ended" if role == END else "errored"] += 1
        self._out.append(event)
        return event

    def _open(self, operation: str, resource_uuid: str, node_uuid: str | None, exempt: bool = False) -> Operation:
        deadline = catalog.OPERATIONS.get(operation, catalog.DEFAULT_DEADLINE_S)
        op = Operation(operation, resource_uuid, node_uuid, self.now, deadline, exempt=exempt)
        self._horizon = max(self._horizon, self.t + deadline)
        self.counts["started"] += 1
        if self.keep_operations:
            self.operations.append(op)
        return op

    def _glance(self, event_type: str, priority: str, payload: Any, op: Operation | None = None,
                role: str = SINGLE) -> None:
        # crc32, not hash(): str hashes change per process, and the same seed must give the same capture
        publisher = GLANCE_APIS[zlib.crc32(event_type.encode()) & 1] if op is None else GLANCE_APIS[0]
        self._emit(event_type, priority, publisher, payload, "glance", None, op, role)

    # Ironic API CRUD: `.start` and `.end` of one API call, the context of the caller.
    def _crud(self, uuid_: str, node_uuid: str, family: str, action: str, payload: Callable[[], Any],
              context: dict[str, Any], exempt: bool = False) -> None:
        op = self._open(f"baremetal.{family}.{action}", uuid_, node_uuid, exempt)
        self._crud_ops[(uuid_, family, action)] = (op, context)
        self._emit(f"baremetal.{family}.{action}.start", "INFO", IRONIC_API, payload(), "ironic", context, op, START)

    def _crud_end(self, uuid_: str, node_uuid: str, family: str, action: str, payload: Callable[[], Any],
                  exempt: bool = False) -> None:
        op, context = self._crud_ops.pop((uuid_, family, action))
        self._emit(f"baremetal.{family}.{action}.end", "INFO", IRONIC_API, payload(), "ironic", context, op, END)

    def _api_call(self, uuid_: str, node_uuid: str, family: str, action: str,
                  payload: Callable[[], Any], before_end: Callable[[], None] | None = None) -> Gen:
        """An API CRUD call: start, a fraction of a second, (the change), end."""
        self._crud(uuid_, node_uuid, family, action, payload, self._api_context())
        yield self.rng.uniform(*API_S)
        if before_end:
            before_end()
        self._crud_end(uuid_, node_uuid, family, action, payload)

    # --- node actions --------------------------------------------------------------------------

    def _provision(self, node: Node, op: Operation | None, new_state: str, target: str | None, fsm_event: str,
                   role: str, context: dict[str, Any]) -> Operation | None:
        """Move the provision state and emit what `_notify_provision_state_change` emits for it."""
        previous, previous_target = node.provision_state, node.target_provision_state
        node.provision_state, node.target_provision_state = new_state, target
        node.provision_updated_at = node.updated_at = self.now
        if role == START:
            op = self._open("baremetal.node.provision_set", node.uuid, node.uuid)
        priority = "ERROR" if role == ERROR else "INFO"
        suffix = {START: "start", STEP: "success", END: "end", ERROR: "error", SINGLE: "success"}[role]
        payload = payloads.node_payload(
            "NodeSetProvisionStatePayload", node, event=fsm_event,
            previous_provision_state=previous, previous_target_provision_state=previous_target)
        self._emit(f"baremetal.node.provision_set.{suffix}", priority, node.conductor, payload, "ironic",
                   context, op, role)
        return op

    def _power(self, node: Node, to_power: str, context: dict[str, Any] | None = None) -> Gen:
        """`node_power_action`: start, the BMC works 5-30 s, end (or error at ERROR)."""
        context = context or self._conductor_context()
        op = self._open("baremetal.node.power_set", node.uuid, node.uuid)
        node.target_power_state = "power on" if to_power == "rebooting" else to_power
        self._emit("baremetal.node.power_set.start", "INFO", node.conductor,
                   payloads.node_payload("NodeSetPowerStatePayload", node, to_power=to_power),
                   "ironic", context, op, START)
        yield self.rng.uniform(*POWER_S)
        node.updated_at = self.now
        if self.rng.random() < P_POWER_FAIL:
            node.last_error = _LAST_ERRORS["power"]
            node.target_power_state = None
            self._emit("baremetal.node.power_set.error", "ERROR", node.conductor,
                       payloads.node_payload("NodeSetPowerStatePayload", node, to_power=to_power),
                       "ironic", context, op, ERROR)
            return
        node.power_state, node.target_power_state, node.last_error = node.target_power_state, None, None
        self._emit("baremetal.node.power_set.end", "INFO", node.conductor,
                   payloads.node_payload("NodeSetPowerStatePayload", node, to_power=to_power),
                   "ironic", context, op, END)

    def _waits(self, total: float, parts: int) -> list[float]:
        cuts = sorted(self.rng.uniform(0, total) for _ in range(parts - 1))
        return [b - a for a, b in zip([0.0, *cuts], [*cuts, total])]

    def _deploy(self, node: Node, rebuild: bool = False) -> Gen:
        ctx = self._conductor_context()
        if not rebuild:
            node.instance_uuid = self._uuid()
            node.owner = self.rng.choice(self.projects)
        image = self.rng.choice(self.images) if self.images else None
        node.image_id = image.id if image else None
        op = self._provision(node, None, "deploying", "active", "rebuild" if rebuild else "deploy", START, ctx)
        w = self._waits(self.rng.uniform(*DEPLOY_S), 3)
        yield w[0]
        yield from self._power(node, "rebooting", ctx)
        self._provision(node, op, "wait call-back", "active", "wait", STEP, ctx)
        yield w[1]
        if image is not None and image.status == "active":  # the agent pulls the image from Glance
            self._download(image, node.owner or image.owner)
        if self.rng.random() < P_DEPLOY_FAIL:
            node.last_error = _LAST_ERRORS["deploy"].format(uuid=node.uuid)
            self._provision(node, op, "deploy failed", "active", "fail", ERROR, ctx)
            return
        self._provision(node, op, "deploying", "active", "resume", STEP, ctx)
        yield w[2]
        node.last_error = None
        self._provision(node, op, "active", None, "done", END, ctx)

    def _clean(self, node: Node, start_event: str, from_active: bool) -> Gen:
        """provide (manageable -> available) or undeploy (active / deploy failed -> available)."""
        ctx = self._conductor_context()
        w = self._waits(self.rng.uniform(*CLEAN_S), 3)
        if from_active:
            op = self._provision(node, None, "deleting", "available", start_event, START, ctx)
            yield w[0] / 4
            node.instance_uuid, node.owner, node.image_id = None, None, None
            self._provision(node, op, "cleaning", "available", "clean", STEP, ctx)
            yield w[0] * 3 / 4
        else:
            op = self._provision(node, None, "cleaning", "available", start_event, START, ctx)
            yield w[0]
        self._provision(node, op, "clean wait", "available", "wait", STEP, ctx)
        yield w[1]
        if self.rng.random() < P_CLEAN_FAIL:
            node.last_error = _LAST_ERRORS["clean"].format(uuid=node.uuid)
            node.maintenance, node.maintenance_reason = True, node.last_error
            self._provision(node, op, "clean failed", "available", "fail", ERROR, ctx)
            return
        self._provision(node, op, "cleaning", "available", "resume", STEP, ctx)
        yield w[2]
        yield from self._power(node, "power off", ctx)
        node.last_error = None
        self._provision(node, op, "available", None, "done", END, ctx)

    def _inspect(self, node: Node) -> Gen:
        ctx = self._conductor_context()
        node.inspection_started_at, node.inspection_finished_at = self.now, None
        op = self._provision(node, None, "inspecting", "manageable", "inspect", START, ctx)
        w = self._waits(self.rng.uniform(*INSPECT_S), 3)
        yield w[0]
        yield from self._power(node, "rebooting", ctx)
        self._provision(node, op, "inspect wait", "manageable", "wait", STEP, ctx)
        yield w[1]
        if self.rng.random() < P_INSPECT_FAIL:
            node.last_error = _LAST_ERRORS["inspect"]
            self._provision(node, op, "inspect failed", "manageable", "fail", ERROR, ctx)
            return
        self._provision(node, op, "inspecting", "manageable", "resume", STEP, ctx)
        yield w[2]
        node.inspection_finished_at, node.last_error = self.now, None
        self._provision(node, op, "manageable", None, "done", END, ctx)

    def _verify(self, node: Node) -> Gen:
        """manage from enroll: verifying (a power state check), then manageable."""
        ctx = self._conductor_context()
        op = self._provision(node, None, "verifying", "manageable", "manage", START, ctx)
        yield self.rng.uniform(*VERIFY_S)
        node.power_state = "power off"
        self._provision(node, op, "manageable", None, "done", END, ctx)

    def _maintenance(self, node: Node) -> Gen:
        """On, a NIC replaced now and then (port delete + create), then off."""
        yield from self._maintenance_set(node, True)
        yield self.rng.uniform(*MAINTENANCE_S) / 2
        if node.ports and self.rng.random() < 0.3:
            yield from self._replace_port(node)
        yield self.rng.uniform(*MAINTENANCE_S) / 2
        wait = self._guard(node.uuid)  # the same operation again: do not supersede a lost end
        if wait:
            yield wait
        yield from self._maintenance_set(node, False)

    def _maintenance_set(self, node: Node, on: bool) -> Gen:
        """The API's maintenance PUT / DELETE: start with the node as it was, end as it is now."""
        ctx = self._api_context()
        op = self._open("baremetal.node.maintenance_set", node.uuid, node.uuid)
        self._emit("baremetal.node.maintenance_set.start", "INFO", IRONIC_API,
                   payloads.node_payload("NodePayload", node), "ironic", ctx, op, START)
        yield self.rng.uniform(*API_S)
        node.maintenance, node.updated_at = on, self.now
        node.maintenance_reason = self.rng.choice(("replacing DIMM B2", "BMC firmware update",
                                                   "NIC flapping")) if on else None
        self._emit("baremetal.node.maintenance_set.end", "INFO", IRONIC_API,
                   payloads.node_payload("NodePayload", node), "ironic", ctx, op, END)

    def _replace_port(self, node: Node) -> Gen:
        old = node.ports[0]
        yield from self._api_call(old.uuid, node.uuid, "port", "delete", lambda: payloads.port_payload(old),
                                  lambda: node.ports.remove(old))
        yield self.rng.uniform(60, 600)
        new = Port(self._uuid(), node.uuid, self._mac(), old.portgroup_uuid, old.local_link_connection, self.now)
        yield from self._api_call(new.uuid, node.uuid, "port", "create", lambda: payloads.port_payload(new),
                                  lambda: node.ports.append(new))
        if self.rng.random() < 0.5:
            yield self.rng.uniform(5, 60)
            def toggle() -> None:
                new.pxe_enabled = not new.pxe_enabled
                new.updated_at = self.now
            yield from self._api_call(new.uuid, node.uuid, "port", "update", lambda: payloads.port_payload(new), toggle)

    def _enroll(self, node: Node) -> Gen:
        """node create, its portgroup and ports, then manage (verifying)."""
        node.created_at = node.updated_at = node.provision_updated_at = self.now
        yield from self._api_call(node.uuid, node.uuid, "node", "create",
                                  lambda: payloads.node_payload("NodeCRUDPayload", node))
        self._attach_ports(node, self.now)
        ports, portgroups = list(node.ports), list(node.portgroups)
        for pg in portgroups:
            yield self.rng.uniform(1, 5)
            pg.created_at = self.now
            yield from self._api_call(pg.uuid, node.uuid, "portgroup", "create", lambda pg=pg: payloads.portgroup_payload(pg))
        for port in ports:
            yield self.rng.uniform(1, 5)
            port.created_at = self.now
            yield from self._api_call(port.uuid, node.uuid, "port", "create", lambda port=port: payloads.port_payload(port))
        yield self.rng.uniform(5, 60)
        yield from self._verify(node)

    def _retire(self, node: Node, index: int) -> Gen:
        """An available node leaves the fleet (manage, delete ports, portgroups, node); a new one enrolls."""
        self._provision(node, None, "manageable", None, "manage", SINGLE, self._conductor_context())
        yield self.rng.uniform(30, 300)
        for port in list(node.ports):
            yield from self._api_call(port.uuid, node.uuid, "port", "delete", lambda port=port: payloads.port_payload(port))
            yield self.rng.uniform(1, 5)
        for pg in list(node.portgroups):
            yield from self._api_call(pg.uuid, node.uuid, "portgroup", "delete", lambda pg=pg: payloads.portgroup_payload(pg))
            yield self.rng.uniform(1, 5)
        yield from self._api_call(node.uuid, node.uuid, "node", "delete",
                                  lambda: payloads.node_payload("NodeCRUDPayload", node))
        yield self.rng.uniform(600, 3600)
        fresh = self._new_node(index, "new")
        fresh.created_at = fresh.updated_at = fresh.provision_updated_at = self.now
        self.nodes[index] = fresh
        self._spawn(self._node_life(fresh, index, True), 0.0)

    def _corrected(self, node: Node) -> Gen:
        """The power sync loop finds the node in another state than recorded."""
        previous = node.power_state
        node.power_state = "power off" if previous == "power on" else "power on"
        node.updated_at = self.now
        self._emit("baremetal.node.power_state_corrected.success", "INFO", node.conductor,
                   payloads.node_payload("NodeCorrectedPowerStatePayload", node, from_power=previous),
                   "ironic", self._conductor_context(), None, SINGLE)
        yield self.rng.uniform(60, 600)
        yield from self._power(node, previous or "power on")

    def _update(self, node: Node) -> Gen:
        def change() -> None:
            node.extra = {**node.extra, "asset_tag": f"AT-{self._ids.randrange(10**7):07d}"}
            node.updated_at = self.now
        yield from self._api_call(node.uuid, node.uuid, "node", "update",
                                  lambda: payloads.node_payload("NodeCRUDPayload", node), change)

    def _next_action(self, node: Node, index: int) -> Gen | None:
        """The node's next action, drawn by its provision state (data: state -> weighted actions)."""
        state = node.provision_state
        if node.maintenance:  # a clean failure left it in maintenance: an operator fixes it
            return self._recover(node)
        choices: dict[str, tuple[tuple[Callable[[], Gen], float], ...]] = {
            "enroll": ((lambda: self._verify(node), 1.0),),
            "manageable": (
                (lambda: self._inspect(node), 0.35 if node.inspection_finished_at else 0.8),
                (lambda: self._clean(node, "provide", False), 0.6),
                (lambda: self._maintenance(node), 0.05),
            ),
            "available": (
                (lambda: self._deploy(node), 0.72),
                (lambda: self._power(node, self.rng.choice(("power on", "power off"))), 0.1),
                (lambda: self._maintenance(node), 0.06),
                (lambda: self._update(node), 0.06),
                (lambda: self._retire(node, index), 0.03),
                (lambda: self._clean(node, "clean", False), 0.03),
            ),
            "active": (
                (lambda: self._power(node, "rebooting"), 0.34),
                (lambda: self._power(node, "power off" if node.power_state == "power on" else "power on"), 0.16),
                (lambda: self._clean(node, "deleted", True), 0.2),
                (lambda: self._deploy(node, rebuild=True), 0.08),
                (lambda: self._maintenance(node), 0.08),
                (lambda: self._update(node), 0.08),
                (lambda: self._corrected(node), 0.06),
            ),
            "deploy failed": ((lambda: self._clean(node, "deleted", True), 1.0),),
        }
        options = choices.get(state)
        if options is None:  # clean failed / inspect failed: manage back
            return self._recover(node)
        actions, weights = zip(*options)
        return self.rng.choices(actions, weights)[0]()

    def _recover(self, node: Node) -> Gen:
        if node.maintenance:
            yield from self._maintenance_set(node, False)
        if node.provision_state in ("clean failed", "inspect failed"):
            self._provision(node, None, "manageable", None, "manage", SINGLE, self._conductor_context())

    def _node_life(self, node: Node, index: int, new: bool) -> Gen:
        if new:
            yield from self._enroll(node)
            # the guard below needs its terminal events to have passed the faults stage first
            yield self.rng.uniform(60, 600)
        while not self.closing and self.nodes[index] is node:
            wait = self._guard(node.uuid)
            if wait:
                yield wait
                continue
            action = self._next_action(node, index)
            if action is not None:
                yield from action
            if self.nodes[index] is not node:  # retired: its successor has its own life
                return
            yield self.rng.expovariate(1.0 / self.think_s)

    # --- image lives ---------------------------------------------------------------------------

    def _touch(self, image: Image, status: str | None = None) -> None:
        if status:
            image.status = status
        image.updated_at = self.now

    def _upload(self, image: Image) -> Gen:
        """image.prepare -> (data) -> image.upload (INFO, then activate) or image.upload ERROR (a string)."""
        op = self._open("image.upload", image.id, None)
        self._touch(image, "saving")
        self._glance("image.prepare", "INFO", payloads.image_payload(image, importing=True), op, START)
        yield self.rng.uniform(*UPLOAD_S) * image.size / (8 * 1024**3)
        if self.rng.random() < P_UPLOAD_FAIL:
            self._touch(image, "queued")
            text = self.rng.choice(_UPLOAD_ERRORS).format(id=image.id)
            op.end_anonymous = image.id not in text
            self.counts["anonymous"] += op.end_anonymous
            self._glance("image.upload", "ERROR", text, op, ERROR)
            return
        image.checksum, image.virtual_size = self._hex(32), image.size
        self._touch(image, "active")
        self._glance("image.upload", "INFO", payloads.image_payload(image, importing=True), op, END)
        yield 0.05
        self._glance("image.activate", "INFO", payloads.image_payload(image))
        self._glance("image.update", "INFO", payloads.image_payload(image))

    def _import(self, image: Image) -> Gen:
        """An interoperable image import: task create, run, processing, the upload, success or failure."""
        task = Task(self._uuid(), image.owner, self.now, self.now)
        self._glance("task.create", "INFO", payloads.task_payload(task))
        yield self.rng.uniform(0.5, 5)
        task.status, task.updated_at = "processing", self.now
        op = self._open("task", task.id, None)
        self._glance("task.run", "INFO", payloads.task_payload(task), op, START)
        yield self.rng.uniform(0.1, 2)
        self._glance("task.processing", "INFO", payloads.task_payload(task), op, STEP)
        yield self.rng.uniform(5, 60)
        yield from self._upload(image)
        yield self.rng.uniform(0.5, 5)
        task.updated_at = task.expires_at = self.now
        task.expires_at = self.now + timedelta(hours=48)
        if image.status != "active" or self.rng.random() < P_TASK_FAIL / 4:
            task.status = "failure"
            self._glance("task.failure", "INFO", payloads.task_payload(task), op, ERROR)
        else:
            task.status = "success"
            self._glance("task.success", "INFO", payloads.task_payload(task), op, END)

    def _download(self, image: Image, tenant: str) -> None:
        partial = self.rng.random() < P_PARTIAL_DOWNLOAD
        sent = self.rng.randrange(image.size // 2) if partial else image.size
        self._glance("image.send", "ERROR" if partial else "INFO",
                     payloads.image_send_payload(image, sent, tenant, self._hex(32)))

    def _members(self, image: Image) -> Gen:
        member = self.rng.choice(self.projects)
        created = self.now
        self._glance("image.member.create", "INFO", payloads.member_payload(image, member, "pending", created, created))
        yield self.rng.uniform(60, 3600)
        self._glance("image.member.update", "INFO",
                     payloads.member_payload(image, member, self.rng.choice(("accepted", "rejected")), created, self.now))
        image.members.append(member)

    def _image_life(self, image: Image, index: int, new: bool) -> Gen:
        if new:
            image.created_at = image.updated_at = self.now
            self._glance("image.create", "INFO", payloads.image_payload(image))
            yield self.rng.uniform(1, 10)
        while not self.closing and self.images[index] is image:
            wait = self._guard(image.id)
            if wait:
                yield wait
                continue
            if image.status != "active":
                yield from (self._import(image) if self.rng.random() < 0.4 else self._upload(image))
            else:
                roll = self.rng.random()
                if roll < 0.80:
                    self._download(image, self.rng.choice(self.projects))
                elif roll < 0.88:
                    yield from self._members(image)
                elif roll < 0.99:
                    self._touch(image)
                    self._glance("image.update", "INFO", payloads.image_payload(image))
                else:  # retired; a new image takes its place
                    self._touch(image, "deleted")
                    self._glance("image.delete", "INFO", payloads.image_payload(image, deleted_at=self.now))
                    fresh = self._new_image(index, active=False)
                    fresh.created_at = fresh.updated_at = self.now
                    self.images[index] = fresh
                    self._spawn(self._image_life(fresh, index, True), self.rng.uniform(60, 600))
                    return
            yield self.rng.expovariate(2.0 / self.think_s)
