"""Payloads and wire bodies shaped exactly as Ironic and Glance send them.

Pure functions: a resource's current state in, a JSON-ready payload out. The field lists and
versions follow Ironic's and Glance's notification code and the verbatim wire captures in
tests/fixtures/research_bodies.jsonl, which the tests compare the output with:

* Ironic wraps every payload in an ``ironic_object`` envelope (name, namespace, version, data).
  Datetimes inside ``ironic_object.data`` are ISO 8601 with ``Z`` and no fraction.
* Glance sends its payload dicts bare (``format_image_notification`` and friends), times as
  ``isotime()`` (``Z``, no fraction); a failed upload sends a plain string at ERROR.
* The inner message has the keys `oslo_messaging.Notifier._notify` builds; the rabbit driver adds
  ``_unique_id`` and one ``_context_<key>`` per context field, then the messagingv2 envelope wraps
  the inner message as a JSON *string*.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

__all__ = [
    "IRONIC_VERSIONS",
    "envelope",
    "image_payload",
    "image_send_payload",
    "isotime",
    "member_payload",
    "message",
    "node_data",
    "node_payload",
    "oslo_timestamp",
    "port_payload",
    "portgroup_payload",
    "task_payload",
    "wire_body",
]

# ironic_object.name -> ironic_object.version, as emitted by current Ironic (its objects/notification.py payload classes).
IRONIC_VERSIONS: dict[str, str] = {
    "NodePayload": "1.17",
    "NodeSetPowerStatePayload": "1.17",
    "NodeCorrectedPowerStatePayload": "1.17",
    "NodeSetProvisionStatePayload": "1.18",
    "NodeCRUDPayload": "1.15",
    "PortCRUDPayload": "1.8",
    "PortgroupCRUDPayload": "1.3",
}

# NodePayload.SCHEMA keys in the order Ironic's obj_to_primitive writes them (Example A).
NODE_FIELDS: tuple[str, ...] = (
    "clean_step", "conductor_group", "console_enabled", "created_at", "deploy_step", "description",
    "disable_power_off", "driver", "extra", "boot_mode", "secure_boot", "inspection_finished_at",
    "inspection_started_at", "instance_uuid", "last_error", "maintenance", "maintenance_reason", "fault",
    "bios_interface", "boot_interface", "console_interface", "deploy_interface", "inspect_interface",
    "management_interface", "network_interface", "power_interface", "raid_interface",
    "rescue_interface", "storage_interface", "vendor_interface", "name", "owner", "lessee",
    "power_state", "properties", "protected", "protected_reason", "provision_state",
    "provision_updated_at", "resource_class", "retired", "retired_reason", "target_power_state",
    "target_provision_state", "traits", "updated_at", "uuid",
)

# Ironic masks these (`mask_secrets`): the value is replaced, the key stays.
_MASKED = "******"


def isotime(at: datetime | None) -> str | None:
    """Ironic's and Glance's payload datetime form: ``2026-08-20T18:00:00Z``."""
    return None if at is None else at.isoformat(timespec="seconds") + "Z"


def oslo_timestamp(at: datetime) -> str:
    """``str(timeutils.utcnow())``: naive UTC, a space, microseconds unless they are zero."""
    return str(at.replace(tzinfo=None))


def envelope(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "ironic_object.name": name,
        "ironic_object.namespace": "ironic",
        "ironic_object.version": IRONIC_VERSIONS[name],
        "ironic_object.data": data,
    }


def node_data(node: Any) -> dict[str, Any]:
    """NodePayload fields of a node (any object with the NODE_FIELDS as attributes, datetimes as datetimes)."""
    data: dict[str, Any] = {}
    for key in NODE_FIELDS:
        value = getattr(node, key)
        data[key] = isotime(value) if isinstance(value, datetime) else value
    return data


def node_payload(name: str, node: Any, **extra: Any) -> dict[str, Any]:
    """A node payload of class `name`: the NodePayload fields plus the class's own (`to_power`,
    `from_power`, `event`, `previous_provision_state`, ...). Ironic puts the subclass fields first."""
    data = dict(extra)
    data.update(node_data(node))
    if name == "NodeSetProvisionStatePayload":
        data.setdefault("instance_info", _masked_instance_info(node))
        data.setdefault("driver_internal_info", {"is_whole_disk_image": True, "agent_secret_token": _MASKED}
                        if node.provision_state in ("deploying", "wait call-back") else {})
    elif name == "NodeCRUDPayload":
        data.setdefault("chassis_uuid", node.chassis_uuid)
        data.setdefault("instance_info", _masked_instance_info(node))
        data.setdefault("driver_info", {"ipmi_address": node.bmc_address, "ipmi_username": "admin",
                                        "ipmi_password": _MASKED})
    return envelope(name, data)


def _masked_instance_info(node: Any) -> dict[str, Any]:
    if node.image_id is None:
        return {}
    return {"image_source": node.image_id, "root_gb": "100", "configdrive": _MASKED}


def port_payload(port: Any) -> dict[str, Any]:
    return envelope("PortCRUDPayload", {
        "address": port.address,
        "extra": {},
        "local_link_connection": port.local_link_connection,
        "pxe_enabled": port.pxe_enabled,
        "node_uuid": port.node_uuid,
        "portgroup_uuid": port.portgroup_uuid,
        "physical_network": "physnet1",
        "created_at": isotime(port.created_at),
        "updated_at": isotime(port.updated_at),
        "uuid": port.uuid,
        "is_smartnic": False,
        "name": None,
        "description": None,
        "vendor": None,
        "category": None,
        "available_for_dynamic_portgroup": False,
    })


def portgroup_payload(portgroup: Any) -> dict[str, Any]:
    return envelope("PortgroupCRUDPayload", {
        "address": portgroup.address,
        "extra": {},
        "mode": "802.3ad",
        "name": portgroup.name,
        "node_uuid": portgroup.node_uuid,
        "properties": {"miimon": "100"},
        "standalone_ports_supported": True,
        "created_at": isotime(portgroup.created_at),
        "updated_at": isotime(portgroup.updated_at),
        "uuid": portgroup.uuid,
        "category": None,
        "dynamic_portgroup": False,
    })


def image_payload(image: Any, *, importing: bool = False, deleted_at: datetime | None = None) -> dict[str, Any]:
    """glance/notifier.py `format_image_notification`; `importing` adds the two import lists that
    `image.prepare` and `image.upload` carry."""
    payload: dict[str, Any] = {
        "id": image.id,
        "name": image.name,
        "status": image.status,
        "created_at": isotime(image.created_at),
        "updated_at": isotime(image.updated_at),
        "min_disk": 0,
        "min_ram": 0,
        "protected": False,
        "checksum": image.checksum,
        "owner": image.owner,
        "disk_format": image.disk_format,
        "container_format": "bare",
        "size": image.size,
        "virtual_size": image.virtual_size,
        "is_public": image.visibility == "public",
        "visibility": image.visibility,
        "properties": {"os_glance_importing_to_stores": "", "hw_firmware_type": "uefi"},
        "tags": ["baremetal"],
        "deleted": deleted_at is not None,
        "deleted_at": isotime(deleted_at),
    }
    if importing:
        payload["os_glance_importing_to_stores"] = []
        payload["os_glance_failed_import"] = []
    return payload


def image_send_payload(image: Any, bytes_sent: int, receiver_tenant_id: str, receiver_user_id: str) -> dict[str, Any]:
    """`ImageProxy._get_chunk_data_iterator`: the v2 download path has no destination_ip."""
    return {
        "bytes_sent": bytes_sent,
        "image_id": image.id,
        "owner_id": image.owner,
        "receiver_tenant_id": receiver_tenant_id,
        "receiver_user_id": receiver_user_id,
    }


def member_payload(image: Any, member_id: str, status: str, created_at: datetime, updated_at: datetime,
                   deleted: bool = False) -> dict[str, Any]:
    """`format_image_member_notification`."""
    return {
        "image_id": image.id,
        "member_id": member_id,
        "status": status,
        "created_at": isotime(created_at),
        "updated_at": isotime(updated_at),
        "deleted": deleted,
        "deleted_at": isotime(updated_at) if deleted else None,
    }


def task_payload(task: Any) -> dict[str, Any]:
    """`format_task_notification`: `result` and `message` are always null, the input is left out."""
    return {
        "id": task.id,
        "type": task.type,
        "status": task.status,
        "result": None,
        "owner": task.owner,
        "message": None,
        "expires_at": isotime(task.expires_at),
        "created_at": isotime(task.created_at),
        "updated_at": isotime(task.updated_at),
        "deleted": False,
        "deleted_at": None,
    }


def message(message_id: str, publisher_id: str, event_type: str, priority: str, payload: Any,
            timestamp: datetime) -> dict[str, Any]:
    """The dict `Notifier._notify` hands to its driver, with our message_id and simulated time."""
    return {
        "message_id": message_id,
        "publisher_id": publisher_id,
        "event_type": event_type,
        "priority": priority,
        "payload": payload,
        "timestamp": oslo_timestamp(timestamp),
    }


def wire_body(msg: dict[str, Any], context: dict[str, Any] | None, unique_id: str) -> bytes:
    """What the rabbit driver's `_send` publishes for `msg` under messagingv2: `_unique_id`, then the
    `_context_*` keys (`pack_context`), then the 2.0 envelope with the inner message as a JSON string
    (`serialize_msg`, `jsonutils.dumps` = `json.dumps`), the outer dict JSON-encoded by kombu.

    The `--output stdout|kafka` paths use this; `--output rabbit` goes through oslo itself, and a unit
    test holds the two byte for byte."""
    inner = dict(msg)
    inner["_unique_id"] = unique_id
    if context:
        for key, value in context.items():
            inner[f"_context_{key}"] = value
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()
