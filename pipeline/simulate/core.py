"""The simulator's engine: a discrete-event clock, seeded ids, and the emitting every life uses.

Every node and every image is a generator that says what it emits now and how many simulated
seconds pass until its next step; a heap orders all pending steps by simulated time, and the
event-time clock is the time of the step being run (see `fleet` for how that clock meets the wall
clock). Pure: a seeded RNG in, events out, no I/O.
"""
from __future__ import annotations

import heapq
import itertools
import random
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from pipeline import catalog

from .model import (
    ADMIN_CONTEXT,
    API_S,
    END,
    GLANCE_APIS,
    IRONIC_API,
    SETTLE_S,
    SINGLE,
    START,
    TERMINAL,
    Event,
    Gen,
    Image,
    Node,
    Operation,
    Port,
    Portgroup,
    Task,
)


class FleetCore:
    """The clock, the ids and the emitting every life uses; `Fleet` adds the lives themselves."""

    def __init__(self, *, seed: int, start: datetime, conductors: int, think_s: float,
                 keep_operations: bool) -> None:
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
        self.tasks: dict[str, Task] = {}  # by id: what the read API (api.py) answers about
        self.projects = [f"proj-{self._hex(8)}" for _ in range(12)]


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


    def _guard(self, resource_uuid: str) -> float:
        """Seconds the resource waits before its next operation: while an operation of its own has
        lost its end (dropped, or an error text naming no resource) and is not yet past deadline +
        SETTLE_S, a new start of the same operation
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

    def _download(self, image: Image, tenant: str) -> None:
        """An image sent to a tenant (Glance's image.send): a node's deploy pulls one too. The Glance
        lives render it; the engine only names it, so the Ironic lives can call it."""
        raise NotImplementedError

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
        return {**ADMIN_CONTEXT, "user": user, "project_id": project, "project": project, "is_admin": False,
                "request_id": f"req-{self._uuid()}", "roles": ["admin", "member", "reader"],
                "user_identity": f"{user} {project} - - -", "is_admin_project": True}

    def _conductor_context(self) -> dict[str, Any]:
        return {**ADMIN_CONTEXT, "request_id": f"req-{self._uuid()}"}

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
