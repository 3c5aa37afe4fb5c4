"""Acceptance 2: every Ironic and Glance event type, published by oslo.messaging's own Notifier.

The rabbit driver runs on kombu's in-memory transport (see tests/fixtures/oslo_wire.py); each
captured body is normalized and its classification checked against the rules of docs/contracts.md,
written out here independently of the catalog table.
"""
from __future__ import annotations

import uuid

import pytest
from oslo_context import context as oslo_context

from pipeline import catalog, codec, events
from tests.support.oslo_wire import publish

CRUD_FAMILIES = {  # object -> has a node (node_uuid in its payload)
    "node": "self", "port": True, "portgroup": True, "chassis": False, "deploytemplate": False,
    "deploy_template": False, "volumeconnector": True, "volumetarget": True, "allocation": True,
    "runbook": False, "inspectionrule": False,
}
NODE_ACTIONS = {
    "maintenance_set": ("start", "end", "error"),
    "console_set": ("start", "end", "error"),
    "console_restore": ("start", "end", "error"),
    "console_stop": ("start", "end", "error"),
    "power_set": ("start", "end", "error"),
    "power_state_corrected": ("success",),
    "provision_set": ("start", "end", "success", "error"),
}


def ironic_cases() -> list[tuple[str, str, tuple]]:
    """(event_type, priority, (family, action, phase, operation, node kind))."""
    cases = []
    for obj, node in CRUD_FAMILIES.items():
        for action in ("create", "update", "delete"):
            for status in ("start", "end", "error"):
                cases.append((f"baremetal.{obj}.{action}.{status}", "error" if status == "error" else "info",
                              (f"baremetal.{obj}", action, status, f"baremetal.{obj}.{action}", node)))
    for action, statuses in NODE_ACTIONS.items():
        for status in statuses:
            operation = None if status == "success" else f"baremetal.node.{action}"
            cases.append((f"baremetal.node.{action}.{status}", "error" if status == "error" else "info",
                          ("baremetal.node", action, status, operation, "self")))
    return cases


# (event_type, priority, payload kind, (family, action, phase, operation))
GLANCE_CASES = [
    ("image.create", "info", "image", ("image", "create", "success", None)),
    ("image.prepare", "info", "image", ("image", "prepare", "start", "image.upload")),
    ("image.upload", "info", "image", ("image", "upload", "end", "image.upload")),
    ("image.upload", "error", "text", ("image", "upload", "error", "image.upload")),
    ("image.activate", "info", "image", ("image", "activate", "success", None)),
    ("image.send", "info", "send", ("image", "send", "success", None)),
    ("image.update", "info", "image", ("image", "update", "success", None)),
    ("image.delete", "info", "image", ("image", "delete", "success", None)),
    ("image.member.create", "info", "member", ("image.member", "create", "success", None)),
    ("image.member.update", "info", "member", ("image.member", "update", "success", None)),
    ("image.member.delete", "info", "member", ("image.member", "delete", "success", None)),
    ("task.create", "info", "task", ("task", "create", "success", None)),
    ("task.run", "info", "task", ("task", "run", "start", "task")),
    ("task.processing", "info", "task", ("task", "processing", None, "task")),
    ("task.success", "info", "task", ("task", "success", "end", "task")),
    ("task.failure", "info", "task", ("task", "failure", "error", "task")),
    ("task.delete", "info", "task", ("task", "delete", "success", None)),
    ("metadef_namespace.create", "info", "metadef", ("metadef_namespace", "create", "success", None)),
    ("metadef_object.update", "info", "metadef", ("metadef_object", "update", "success", None)),
    ("metadef_property.delete", "info", "metadef", ("metadef_property", "delete", "success", None)),
    ("metadef_resource_type.create", "info", "metadef", ("metadef_resource_type", "create", "success", None)),
    ("metadef_tag.create", "info", "metadef", ("metadef_tag", "create", "success", None)),
]

IRONIC_CASES = ironic_cases()
CONTEXT = oslo_context.RequestContext(user_id="u1", project_id="p1", auth_token="gAAAAA-real-keystone-token")


def test_catalog_lists_exactly_these_ironic_and_glance_event_types():
    tested = {e for e, _, _ in IRONIC_CASES} | {e for e, _, _, _ in GLANCE_CASES}
    known = set(catalog.known_event_types())
    assert tested - known == set()
    # every non-metadef row is exercised here (metadef rows are all alike: a sample is above)
    assert {e for e in known if not e.startswith("metadef_")} - tested == set()
    assert len(IRONIC_CASES) == 11 * 9 + 5 * 3 + 1 + 4


@pytest.mark.parametrize("case", IRONIC_CASES, ids=[c[0] for c in IRONIC_CASES])
def test_ironic_event_type(case):
    event_type, priority, (family, action, phase, operation, node_kind) = case
    resource, node = str(uuid.uuid4()), str(uuid.uuid4())
    data = {"uuid": resource, "created_at": "2026-08-20T18:00:00Z", "extra": {}}
    if node_kind is True:
        data["node_uuid"] = node
    payload = {"ironic_object.name": "SomePayload", "ironic_object.namespace": "ironic",
               "ironic_object.version": "1.0", "ironic_object.data": data}
    captured = publish(event_type, payload, priority=priority, context=CONTEXT,
                       publisher_id="ironic-api.host1")
    event = events.normalize(captured.body)
    assert event["event_type"] == event_type
    assert event["priority"] == priority
    assert (event["service"], event["family"], event["action"], event["phase"], event["operation"]) == (
        "baremetal", family, action, phase, operation)
    assert event["resource_uuid"] == resource
    assert event["node_uuid"] == {"self": resource, True: node, False: None}[node_kind]
    assert event["payload_version"] == "1.0"
    deadline = catalog.classify(event_type, priority).deadline_s
    assert (deadline is not None) == (operation is not None)
    if operation:
        assert catalog.OPERATIONS[operation] == deadline > 0
    value = codec.encode_event(event)
    assert b"gAAAAA-real-keystone-token" not in value
    assert codec.decode_event(value) == event


@pytest.mark.parametrize("case", GLANCE_CASES, ids=[f"{c[0]}@{c[1]}" for c in GLANCE_CASES])
def test_glance_event_type(case):
    event_type, priority, kind, (family, action, phase, operation) = case
    resource = str(uuid.uuid4())
    payload = {
        "image": {"id": resource, "name": "img", "status": "active", "size": 8, "properties": {}, "tags": []},
        "text": f"Image storage media is full: image {resource.upper()} not stored",
        "send": {"bytes_sent": 8, "image_id": resource, "owner_id": "p", "receiver_tenant_id": "p",
                 "receiver_user_id": "u"},
        "member": {"image_id": resource, "member_id": "p2", "status": "pending", "deleted": False},
        "task": {"id": resource, "type": "import", "status": "pending", "result": None, "owner": "p",
                 "message": None, "expires_at": None, "created_at": "2026-08-20T18:00:00Z", "deleted": False},
        "metadef": {"namespace": "OS::Compute::Hypervisor", "name": "hypervisor_type", "id": resource},
    }[kind]
    # Glance passes an empty dict as context: no _context_* keys at all
    captured = publish(event_type, payload, priority=priority, publisher_id="image.localhost")
    event = events.normalize(captured.body)
    assert (event["service"], event["family"], event["action"], event["phase"], event["operation"]) == (
        "image", family, action, phase, operation)
    assert event["resource_uuid"] == (None if kind == "metadef" else resource)
    assert event["node_uuid"] is None
    assert event["topic"] == f"notifications.{family}"
    assert codec.decode_event(codec.encode_event(event)) == event


@pytest.mark.parametrize("driver", ["messaging", "messagingv2"])
def test_v1_and_v2_drivers_decode_alike(driver):
    resource = str(uuid.uuid4())
    payload = {"ironic_object.data": {"uuid": resource}, "ironic_object.version": "1.17"}
    captured = publish("baremetal.node.power_set.end", payload, context=CONTEXT, driver=driver)
    assert captured.body.startswith(b'{"oslo.version"') == (driver == "messagingv2")
    event = events.normalize(captured.body)
    assert (event["phase"], event["resource_uuid"]) == ("end", resource)
    assert "_unique_id" not in str(event["payload"]) and "_context" not in str(event["payload"])


@pytest.mark.parametrize("event_type, expected", [
    ("baremetal.node.inspect.start", ("baremetal", "baremetal.node", "inspect", "start", "baremetal.node.inspect")),
    ("compute.instance.create.end", ("compute", "compute.instance", "create", "end", None)),
    ("hardware.ipmi.metrics.update", ("hardware", "hardware.ipmi.metrics", "update", None, None)),
])
def test_unknown_event_types_are_relayed(event_type, expected):
    resource = str(uuid.uuid4())
    captured = publish(event_type, {"ironic_object.data": {"uuid": resource}, "node_uuid": resource})
    event = events.normalize(captured.body)
    assert (event["service"], event["family"], event["action"], event["phase"], event["operation"]) == expected
    assert event["resource_uuid"] == resource
