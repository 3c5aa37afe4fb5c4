"""Acceptance 1: every notification example of both seed documents, as a real wire message.

Each example goes through oslo.messaging's own Notifier and rabbit driver (messagingv2 envelope,
upper-case priority, oslo timestamp) and the captured body is normalized; family, action, phase,
operation and the UUIDs are asserted per example against the values read off the documents.
"""
from __future__ import annotations

import re

import orjson
import pytest

import tests.support.seed_examples as seed_examples
from pipeline import codec, events
from tests.support.oslo_wire import publish

NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
IMAGE = seed_examples.IMAGE_ID
TASK = seed_examples.TASK_ID
OSLO_TS = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?")

# event_type -> (family, action, phase, operation, resource_uuid, node_uuid, payload_name)
IRONIC_EXPECTED = {
    "baremetal.chassis.update.end": ("baremetal.chassis", "update", "end", "baremetal.chassis.update",
                                     "1910f669-ce8b-43c2-b1d8-cf3d65be815e", None, "ChassisCRUDPayload"),
    "baremetal.deploy_template.update.end": ("baremetal.deploy_template", "update", "end",
                                             "baremetal.deploy_template.update",
                                             "1910f669-ce8b-43c2-b1d8-cf3d65be815e", None, "DeployTemplateCRUDPayload"),
    "baremetal.node.update.end": ("baremetal.node", "update", "end", "baremetal.node.update", NODE, NODE,
                                  "NodeCRUDPayload"),
    "baremetal.port.update.end": ("baremetal.port", "update", "end", "baremetal.port.update", NODE,
                                  "5b236cab-ad4e-4220-b57c-e827e858745a", "PortCRUDPayload"),
    "baremetal.portgroup.update.end": ("baremetal.portgroup", "update", "end", "baremetal.portgroup.update",
                                       "db033a40-bfed-4c84-815a-3db26bb268bb", "5b236cab-ad4e-4220-b57c-e827e858745a",
                                       "PortgroupCRUDPayload"),
    "baremetal.volumeconnector.update.end": ("baremetal.volumeconnector", "update", "end",
                                             "baremetal.volumeconnector.update",
                                             "19b9f3ab-4754-4725-a7a4-c43ea7e57360",
                                             "4dbb4e69-99a8-4e13-b6e8-dd2ad4a20caf", "VolumeConnectorCRUDPayload"),
    "baremetal.volumetarget.update.end": ("baremetal.volumetarget", "update", "end", "baremetal.volumetarget.update",
                                          "82a45833-9c58-4ec1-943c-2091ab10e47b",
                                          "4dbb4e69-99a8-4e13-b6e8-dd2ad4a20caf", "VolumeTargetCRUDPayload"),
    "baremetal.node.maintenance_set.start": ("baremetal.node", "maintenance_set", "start",
                                             "baremetal.node.maintenance_set", NODE, NODE, "NodePayload"),
    "baremetal.node.console_set.end": ("baremetal.node", "console_set", "end", "baremetal.node.console_set",
                                       NODE, NODE, "NodePayload"),
    "baremetal.node.power_set.start": ("baremetal.node", "power_set", "start", "baremetal.node.power_set",
                                       NODE, NODE, "NodeSetPowerStatePayload"),
    "baremetal.node.power_state_corrected.success": ("baremetal.node", "power_state_corrected", "success", None,
                                                     NODE, NODE, "NodeCorrectedPowerStatePayload"),
    "baremetal.node.provision_set.start": ("baremetal.node", "provision_set", "start",
                                           "baremetal.node.provision_set", NODE, NODE, "NodeSetProvisionStatePayload"),
}

# (event_type, priority) -> (family, action, phase, operation, resource_uuid)
GLANCE_EXPECTED = {
    ("image.create", "INFO"): ("image", "create", "success", None, IMAGE),
    ("image.create", "ERROR"): ("image", "create", "error", None, None),  # text without a UUID
    ("image.prepare", "INFO"): ("image", "prepare", "start", "image.upload", IMAGE),
    ("image.upload", "INFO"): ("image", "upload", "end", "image.upload", IMAGE),
    ("image.upload", "ERROR"): ("image", "upload", "error", "image.upload", IMAGE),  # UUID from the text
    ("image.upload", "WARN"): ("image", "upload", None, "image.upload", None),
    ("image.activate", "INFO"): ("image", "activate", "success", None, IMAGE),
    ("image.send", "INFO"): ("image", "send", "success", None, IMAGE),
    ("image.send", "ERROR"): ("image", "send", "error", None, IMAGE),
    ("image.update", "INFO"): ("image", "update", "success", None, IMAGE),
    ("image.delete", "INFO"): ("image", "delete", "success", None, IMAGE),  # payload is the id itself
    ("task.run", "INFO"): ("task", "run", "start", "task", TASK),
    ("task.processing", "INFO"): ("task", "processing", None, "task", TASK),
    ("task.success", "INFO"): ("task", "success", "end", "task", TASK),
    ("task.failure", "INFO"): ("task", "failure", "error", "task", TASK),
    ("task.failure", "ERROR"): ("task", "failure", "error", "task", None),
}

IRONIC = seed_examples.ironic_examples()
GLANCE = seed_examples.glance_examples()


def test_every_ironic_example_is_covered():
    assert len(IRONIC) == 12
    assert {e["event_type"] for e in IRONIC} == set(IRONIC_EXPECTED)
    assert {(e, p) for e, p, _ in GLANCE} == set(GLANCE_EXPECTED)


def _check_wire(body: bytes, priority: str) -> dict:
    envelope = orjson.loads(body)
    assert envelope["oslo.version"] == "2.0"
    inner = orjson.loads(envelope["oslo.message"])
    assert inner["priority"] == priority.upper()  # the wire's upper case
    assert OSLO_TS.fullmatch(inner["timestamp"])
    return inner


@pytest.mark.parametrize("example", IRONIC, ids=[e["event_type"] for e in IRONIC])
def test_ironic_example(example):
    captured = publish(example["event_type"], example["payload"], priority=example["priority"],
                       publisher_id=example["publisher_id"])
    inner = _check_wire(captured.body, example["priority"])
    event = events.normalize(captured.body)
    family, action, phase, operation, resource, node, name = IRONIC_EXPECTED[example["event_type"]]
    assert event["event_type"] == example["event_type"]
    assert event["priority"] == "info"
    assert event["service"] == "baremetal"
    assert (event["family"], event["action"], event["phase"], event["operation"]) == (family, action, phase, operation)
    assert event["resource_uuid"] == resource
    assert event["node_uuid"] == node
    assert event["payload_name"] == name
    assert event["payload_version"] == example["payload"]["ironic_object.version"]
    assert event["publisher_id"] == example["publisher_id"]
    assert event["message_id"] == inner["message_id"]
    assert event["topic"] == f"notifications.{family}"
    assert event["timestamp"].endswith("Z") and event["timestamp"][:19].replace("T", " ") == inner["timestamp"][:19]
    assert events.relay_key(event) == resource.encode()
    assert codec.decode_event(codec.encode_event(event)) == event


@pytest.mark.parametrize("example", GLANCE, ids=[f"{e}@{p}" for e, p, _ in GLANCE])
def test_glance_example(example):
    event_type, priority, payload = example
    captured = publish(event_type, payload, priority=priority.lower(), publisher_id="image.glance-api-1")
    _check_wire(captured.body, priority)
    event = events.normalize(captured.body)
    family, action, phase, operation, resource = GLANCE_EXPECTED[(event_type, priority)]
    assert event["service"] == "image"
    assert event["priority"] == priority.lower()
    assert (event["family"], event["action"], event["phase"], event["operation"]) == (family, action, phase, operation)
    assert event["resource_uuid"] == resource
    assert event["node_uuid"] is None
    assert event["payload_name"] is None
    assert event["topic"] == f"notifications.{family}"
    assert codec.decode_event(codec.encode_event(event)) == event


def test_volume_target_example_keeps_documented_masking():
    example = next(e for e in IRONIC if e["event_type"] == "baremetal.volumetarget.update.end")
    event = events.normalize(publish(example["event_type"], example["payload"]).body)
    props = event["payload"]["ironic_object.data"]["properties"]
    assert props["auth_password"] == "***"
    assert props["target_iqn"].startswith("iqn.2010-10")
