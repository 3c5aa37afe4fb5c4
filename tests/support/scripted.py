"""Scripted notifications for tests and benchmarks: real wire bodies, normalized, as relay records.

The bodies follow the verbatim wire captures in tests/fixtures/research_bodies.jsonl (Ironic
``power_set.start``, Glance ``image.upload`` success and failure): a messagingv2 envelope around the inner
message, an ``ironic_object`` envelope for Ironic payloads, bare dicts (or a string at ERROR) for
Glance. `relay` turns one into what the bridge writes: topic, key, value, headers.
"""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import codec, events

__all__ = ["T0", "at", "glance_body", "ironic_body", "node_data", "normalized", "relay"]

T0 = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC)

_NODE_DATA: dict[str, Any] = {
    "clean_step": {}, "conductor_group": "", "console_enabled": False,
    "created_at": "2026-08-20T18:00:00Z", "deploy_step": {}, "description": None, "disable_power_off": False,
    "driver": "ipmi", "extra": {}, "boot_mode": "uefi", "secure_boot": None, "inspection_finished_at": None,
    "inspection_started_at": None, "instance_uuid": None, "last_error": None, "maintenance": False,
    "maintenance_reason": None, "fault": None, "bios_interface": "no-bios", "boot_interface": "ipxe",
    "console_interface": "no-console", "deploy_interface": "direct", "inspect_interface": "agent",
    "management_interface": "ipmitool", "network_interface": "neutron", "power_interface": "ipmitool",
    "raid_interface": "no-raid", "rescue_interface": "no-rescue", "storage_interface": "noop",
    "vendor_interface": "ipmitool", "name": "bm-rack12-u07", "owner": None, "lessee": None,
    "power_state": "power off", "properties": {"cpus": 64, "memory_mb": 524288, "local_gb": 1800, "cpu_arch": "x86_64"},
    "protected": False, "protected_reason": None, "provision_state": "available",
    "provision_updated_at": "2026-08-20T18:00:00Z", "resource_class": "baremetal.gpu", "retired": False,
    "retired_reason": None, "target_power_state": None, "target_provision_state": None, "traits": [],
    "updated_at": "2026-08-20T18:00:00Z", "uuid": None,
}

_PAYLOAD_NAMES = {
    "power_set": ("NodeSetPowerStatePayload", "1.17"),
    "power_state_corrected": ("NodeCorrectedPowerStatePayload", "1.17"),
    "provision_set": ("NodeSetProvisionStatePayload", "1.18"),
    "create": ("NodeCRUDPayload", "1.15"),
    "update": ("NodeCRUDPayload", "1.15"),
    "delete": ("NodeCRUDPayload", "1.15"),
}


def at(seconds: float) -> datetime:
    """T0 + seconds."""
    return T0 + timedelta(seconds=seconds)


def node_data(node_uuid: str, **fields: Any) -> dict[str, Any]:
    return {**_NODE_DATA, "uuid": node_uuid, **fields}


def _oslo_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _body(event_type: str, priority: str, payload: Any, ts: datetime, message_id: str | None,
          publisher_id: str) -> bytes:
    inner = {
        "message_id": message_id or str(uuid.uuid4()), "publisher_id": publisher_id,
        "event_type": event_type, "priority": priority, "payload": payload, "timestamp": _oslo_time(ts),
        "_unique_id": uuid.uuid4().hex,
    }
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def ironic_body(event_type: str, node_uuid: str, ts: datetime, *, message_id: str | None = None,
                publisher_id: str = "ironic-conductor.conductor-1", priority: str | None = None,
                **fields: Any) -> bytes:
    """A baremetal.node.* body; `fields` override the node snapshot (power_state=..., to_power=...)."""
    action = event_type.split(".")[2]
    name, version = _PAYLOAD_NAMES.get(action, ("NodePayload", "1.17"))
    payload = {"ironic_object.name": name, "ironic_object.namespace": "ironic",
               "ironic_object.version": version, "ironic_object.data": node_data(node_uuid, **fields)}
    if priority is None:
        priority = "ERROR" if event_type.endswith(".error") else "INFO"
    return _body(event_type, priority, payload, ts, message_id, publisher_id)


def glance_body(event_type: str, image_or_task_id: str, ts: datetime, *, message_id: str | None = None,
                publisher_id: str = "image.glance-api-1", priority: str = "INFO",
                text: str | None = None) -> bytes:
    """An image.* / task.* body; at ERROR with `text`, the payload is that string (a failed upload)."""
    payload: Any
    if text is not None:
        payload = text
    elif event_type.startswith("task."):
        payload = {"id": image_or_task_id, "type": "import", "status": "processing", "result": None,
                   "owner": "proj-b1946ac9", "message": None, "expires_at": None,
                   "created_at": "2026-08-20T17:59:30Z", "updated_at": "2026-08-20T17:59:30Z",
                   "deleted": False, "deleted_at": None}
    else:
        payload = {"id": image_or_task_id, "name": "ubuntu-24.04-baremetal", "status": "saving",
                   "created_at": "2026-08-20T17:59:30Z", "updated_at": "2026-08-20T17:59:30Z",
                   "min_disk": 0, "min_ram": 0, "protected": False, "checksum": None, "owner": "proj-b1946ac9",
                   "disk_format": "raw", "container_format": "bare", "size": 8, "virtual_size": None,
                   "is_public": False, "visibility": "shared", "properties": {}, "tags": [], "deleted": False,
                   "deleted_at": None, "os_glance_importing_to_stores": [], "os_glance_failed_import": []}
    return _body(event_type, priority, payload, ts, message_id, publisher_id)


def normalized(body: bytes, topic_prefix: str = "notifications.") -> events.NormalizedEvent:
    return events.normalize(body, topic_prefix=topic_prefix)


def relay(event: events.NormalizedEvent, value_format: str = "avro") -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
    """(topic, key, value, headers) exactly as the bridge writes the event."""
    headers = [("event_type", event["event_type"].encode()), ("message_id", event["message_id"].encode()),
               ("priority", event["priority"].encode()),
               ("content-type", b"avro/binary" if value_format == "avro" else b"application/json")]
    return event["topic"], events.relay_key(event), codec.encode_event(event, value_format), headers
