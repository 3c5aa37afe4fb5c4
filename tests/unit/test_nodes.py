"""Node state: newest event time wins per field group; changes carry their time and event."""
from __future__ import annotations

import uuid

from pipeline.streams import nodes, scripted as s
from pipeline.streams.models import micros


def apply(node, event_type, t, **fields):
    e = s.normalized(s.ironic_body(event_type, NODE, s.at(t), **fields))
    node, changed = nodes.apply(node, e, micros(e["timestamp"]))
    return node, changed, e


NODE = str(uuid.uuid4())


def test_first_event_sets_every_group() -> None:
    node, changed, e = apply(None, "baremetal.node.power_set.start", 0, power_state="power off")
    assert changed
    rec = nodes.record(NODE, node)
    assert rec["power_state"] == "power off" and rec["provision_state"] == "available"
    assert rec["power_changed_by"] == e["message_id"]
    assert rec["power_changed_event"] == "baremetal.node.power_set.start"
    assert rec["deleted"] is False


def test_an_older_event_does_not_overwrite_a_newer_one() -> None:
    node, _, newer = apply(None, "baremetal.node.power_set.end", 10, power_state="power on")
    node, changed, _ = apply(node, "baremetal.node.power_set.start", 5, power_state="power off")
    assert not changed
    assert nodes.record(NODE, node)["power_state"] == "power on"
    assert nodes.record(NODE, node)["power_changed_by"] == newer["message_id"]


def test_a_confirming_event_changes_nothing_but_still_orders() -> None:
    node, _, first = apply(None, "baremetal.node.power_set.end", 10, power_state="power on")
    node, changed, _ = apply(node, "baremetal.node.power_state_corrected.success", 20, power_state="power on")
    assert not changed
    assert nodes.record(NODE, node)["power_changed_by"] == first["message_id"]
    # an event stamped between the two is older than what the group has seen: ignored
    node, changed, _ = apply(node, "baremetal.node.power_set.start", 15, power_state="power off")
    assert not changed and nodes.record(NODE, node)["power_state"] == "power on"


def test_previous_provision_state_is_derived_when_the_payload_lacks_it() -> None:
    node, _, _ = apply(None, "baremetal.node.update.end", 0, provision_state="manageable")
    node, changed, _ = apply(node, "baremetal.node.update.end", 1, provision_state="available")
    assert changed
    assert nodes.record(NODE, node)["previous_provision_state"] == "manageable"


def test_maintenance_and_delete() -> None:
    node, _, _ = apply(None, "baremetal.node.maintenance_set.end", 0, maintenance=True, maintenance_reason="disk")
    rec = nodes.record(NODE, node)
    assert (rec["maintenance"], rec["maintenance_reason"]) == (True, "disk")
    node, changed, e = apply(node, "baremetal.node.delete.end", 5)
    assert changed and nodes.record(NODE, node)["deleted"] is True
    assert nodes.record(NODE, node)["deleted_changed_by"] == e["message_id"]


def test_transitional_states() -> None:
    node, _, e = apply(None, "baremetal.node.provision_set.start", 0, provision_state="deploying")
    assert nodes.in_transition_since(node) == micros(e["timestamp"])
    node, _, _ = apply(node, "baremetal.node.provision_set.end", 9, provision_state="active")
    assert nodes.in_transition_since(node) is None


def test_non_ironic_payloads_are_ignored() -> None:
    e = s.normalized(s.glance_body("image.upload", NODE, s.at(0)))
    assert nodes.apply(None, e, 0) == (None, False)
