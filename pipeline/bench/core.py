"""Throughput of the pure core on one core: decode + classify + mask + Avro-encode per second.

The bodies are what an Ironic conductor publishes through oslo.messaging's rabbit driver
(messagingv2 envelope, `_unique_id`, `_context_*`), with realistic 2-3 KB node payloads.
Run ``python -m pipeline.bench.core [seconds]``; `make bench` calls `measure_core`.
"""
from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import orjson

from pipeline import codec, events

__all__ = ["measure_core", "sample_bodies"]

_NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


def _node_data(**extra: Any) -> dict:
    data = {
        "clean_step": {}, "conductor_group": "rack12", "console_enabled": False,
        "created_at": "2026-08-20T18:00:00Z", "deploy_step": {}, "description": "GPU node, rack 12 U07",
        "disable_power_off": False, "driver": "ipmi", "extra": {"asset_tag": "AT-0042117", "rack": "r12"},
        "boot_mode": "uefi", "secure_boot": None, "inspection_finished_at": "2026-08-20T18:20:00Z",
        "inspection_started_at": "2026-08-20T18:10:00Z", "instance_uuid": "d7d0c7c4-9a3f-4b7b-8f5c-0f2f0e5c7a11",
        "last_error": None, "maintenance": False, "maintenance_reason": None, "fault": None,
        "bios_interface": "no-bios", "boot_interface": "ipxe", "console_interface": "no-console",
        "deploy_interface": "direct", "inspect_interface": "agent", "management_interface": "ipmitool",
        "network_interface": "neutron", "power_interface": "ipmitool", "raid_interface": "no-raid",
        "rescue_interface": "no-rescue", "storage_interface": "noop", "vendor_interface": "ipmitool",
        "name": "bm-rack12-u07", "owner": "proj-b1946ac9", "lessee": None, "power_state": "power off",
        "properties": {"cpus": 64, "memory_mb": 524288, "local_gb": 1800, "cpu_arch": "x86_64",
                       "capabilities": "boot_mode:uefi,gpu:a100"},
        "protected": False, "protected_reason": None, "provision_state": "active",
        "provision_updated_at": "2026-08-20T18:00:00Z", "resource_class": "baremetal.gpu", "retired": False,
        "retired_reason": None, "target_power_state": None, "target_provision_state": None,
        "traits": ["CUSTOM_GPU_A100", "HW_CPU_X86_AVX512F", "CUSTOM_RACK12"],
        "updated_at": "2026-08-20T18:00:00Z", "uuid": _NODE,
    }
    data.update(extra)
    return data


def _body(event_type: str, priority: str, name: str, version: str, data: dict) -> bytes:
    inner = {
        "message_id": str(uuid.uuid4()),
        "publisher_id": "ironic-conductor.conductor-1.example.org",
        "event_type": event_type,
        "priority": priority,
        "payload": {"ironic_object.name": name, "ironic_object.namespace": "ironic",
                    "ironic_object.version": version, "ironic_object.data": data},
        "timestamp": "2026-11-22 01:11:48.287830",
        "_unique_id": uuid.uuid4().hex,
        "_context_user": "u1", "_context_project_id": "p1", "_context_is_admin": True,
        "_context_auth_token": None, "_context_request_id": "req-6c2b8d2e-0d1e-4a55-9a8e-2b1a5c7e9f00",
        "_context_roles": [], "_context_user_identity": "u1 p1 - - -",
    }
    return orjson.dumps({"oslo.version": "2.0", "oslo.message": orjson.dumps(inner).decode()})


def sample_bodies() -> list[bytes]:
    """Four wire bodies of 2-3 KB: power_set start/end, provision_set start/end."""
    return [
        _body("baremetal.node.power_set.start", "INFO", "NodeSetPowerStatePayload", "1.17",
              _node_data(to_power="power on")),
        _body("baremetal.node.power_set.end", "INFO", "NodeSetPowerStatePayload", "1.17",
              _node_data(to_power="power on", power_state="power on")),
        _body("baremetal.node.provision_set.start", "INFO", "NodeSetProvisionStatePayload", "1.18",
              _node_data(provision_state="deploying", target_provision_state="active",
                         previous_provision_state="available", previous_target_provision_state=None,
                         event="deploy", instance_info={"image_source": "6a3f0d1e-2b7c-4f3e-9d8a-5c1e7b2a9f40",
                                                        "root_gb": "100", "configdrive": "******"},
                         driver_internal_info={"is_whole_disk_image": True, "agent_secret_token": "******"})),
        _body("baremetal.node.provision_set.end", "INFO", "NodeSetProvisionStatePayload", "1.18",
              _node_data(provision_state="active", previous_provision_state="deploying",
                         previous_target_provision_state="active", event="done",
                         instance_info={"image_source": "6a3f0d1e-2b7c-4f3e-9d8a-5c1e7b2a9f40"},
                         driver_internal_info={"is_whole_disk_image": True})),
    ]


def measure_core(seconds: float = 3.0) -> dict:
    """Events per second through normalize + encode_event (Avro) on this one thread."""
    bodies = sample_bodies()
    normalize, encode = events.normalize, codec.encode_event
    for body in bodies:  # warm caches (schema load, catalog) outside the clock
        encode(normalize(body))
    count = 0
    value_bytes = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for body in bodies:
            value_bytes += len(encode(normalize(body)))
        count += len(bodies)
        if count % 256 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    return {
        "core_rate": count / elapsed,
        "events": count,
        "seconds": elapsed,
        "body_bytes_avg": sum(map(len, bodies)) / len(bodies),
        "avro_bytes_avg": value_bytes / count,
    }


def main(argv: list[str]) -> int:
    seconds = float(argv[0]) if argv else 3.0
    result = measure_core(seconds)
    print(
        f"core: {result['core_rate']:,.0f} events/s decoded+classified+masked+Avro-encoded on one core "
        f"({result['events']} events in {result['seconds']:.2f} s, body {result['body_bytes_avg']:.0f} B, "
        f"Avro value {result['avro_bytes_avg']:.0f} B)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
