"""The simulated fleet's things and its numbers: nodes, ports, portgroups, images and tasks as
mutable records, the ground truth of each operation, the events a life emits, and the durations and
failure rates the lives draw from. Plain data, no behaviour beyond small derived properties."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from . import payloads

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

ADMIN_CONTEXT: dict[str, Any] = {  # ironic.common.context.get_admin_context(), after redacted_copy + to_dict
    "user": None, "project_id": None, "system_scope": None, "project": None, "domain": None,
    "user_domain": None, "project_domain": None, "is_admin": True, "read_only": False,
    "show_deleted": False, "auth_token": None, "request_id": None, "global_request_id": None,
    "resource_uuid": None, "roles": [], "user_identity": "- - - - -", "is_admin_project": True,
    "auth_token_info": None,
}

LAST_ERRORS = {
    "deploy": "Timeout reached while waiting for callback for node {uuid}",
    "clean": "Failed to tear down from cleaning for node {uuid}, reason: Agent returned error for clean step",
    "inspect": "Failed to inspect hardware. Reason: timeout waiting for the ramdisk to report",
    "power": "IPMI call failed: power status.",
}
# glance/notifier.py ImageProxy.set_data: the store errors do not name the image, the others do.
UPLOAD_ERRORS = (
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

    # NodePayload fields that never change in the simulation: class constants, read-only on a slotted
    # instance; the two dicts stay properties so that no caller can change one shared dict
    clean_step = property(lambda self: {})
    deploy_step = property(lambda self: {})
    conductor_group = ""
    description = None
    disable_power_off = False
    driver = "ipmi"
    boot_mode = "uefi"
    secure_boot = None
    fault = None
    bios_interface = "no-bios"
    boot_interface = "ipxe"
    console_interface = "no-console"
    deploy_interface = "direct"
    inspect_interface = "agent"
    management_interface = "ipmitool"
    network_interface = "neutron"
    power_interface = "ipmitool"
    raid_interface = "no-raid"
    rescue_interface = "no-rescue"
    storage_interface = "noop"
    vendor_interface = "ipmitool"
    lessee = None
    protected = False
    protected_reason = None
    retired = False
    retired_reason = None


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
