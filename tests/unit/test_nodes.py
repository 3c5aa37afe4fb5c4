"""Node state: newest event time wins per field group; changes carry their time and event."""
from __future__ import annotations

import uuid

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.streams import nodes
from pipeline.streams.models import micros
from tests.support import scripted as s


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
    node, _, _ = apply(node, "baremetal.node.power_set.start", 5, power_state="power off")
    assert nodes.record(NODE, node)["power_state"] == "power on"
    assert nodes.record(NODE, node)["power_changed_by"] == newer["message_id"]


def test_a_confirming_event_changes_nothing_but_still_orders() -> None:
    node, _, first = apply(None, "baremetal.node.power_set.end", 10, power_state="power on")
    node, changed, _ = apply(node, "baremetal.node.power_state_corrected.success", 20, power_state="power on")
    assert not changed
    assert nodes.record(NODE, node)["power_changed_by"] == first["message_id"]
    # an event stamped between the two arrives last: the value stays the newest's, but the node
    # was off in between, so its power came back on with the newest event
    node, changed, _ = apply(node, "baremetal.node.power_set.start", 15, power_state="power off")
    rec = nodes.record(NODE, node)
    assert changed and rec["power_state"] == "power on"
    assert rec["power_changed_event"] == "baremetal.node.power_state_corrected.success"


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


def test_an_older_event_with_the_same_values_moves_the_change_back() -> None:
    """update.start and update.end carry the same maintenance flag; the end arrives first (a relay
    retry reorders them): the change is still the start's, as in arrival order."""
    node, _, end = apply(None, "baremetal.node.update.end", 9, maintenance=False)
    assert nodes.record(NODE, node)["maintenance_changed_by"] == end["message_id"]
    node, changed, start = apply(node, "baremetal.node.update.start", 4, maintenance=False)
    assert changed and nodes.record(NODE, node)["maintenance_changed_by"] == start["message_id"]
    # but not past an event with other values
    node, _, _ = apply(None, "baremetal.node.maintenance_set.end", 2, maintenance=True, maintenance_reason="fan")
    node, _, end = apply(node, "baremetal.node.update.end", 9, maintenance=False)
    node, _, _ = apply(node, "baremetal.node.update.start", 1, maintenance=False)
    assert nodes.record(NODE, node)["maintenance_changed_by"] == end["message_id"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["power on", "power off"]), min_size=2, max_size=8), st.data())
def test_one_late_event_gives_the_in_order_state(powers: list[str], data) -> None:
    """One event arriving after all the others (a retried record) changes nothing, when it carries
    the final value or is older than the final run of that value."""
    events = [s.normalized(s.ironic_body("baremetal.node.power_set.end", NODE, s.at(t), power_state=p))
              for t, p in enumerate(powers)]
    late = data.draw(st.integers(0, len(events) - 1))
    final_run = next(i for i in range(len(powers) - 1, -1, -1) if i == 0 or powers[i - 1] != powers[-1])
    assume(powers[late] == powers[-1] or late < final_run - 1)

    def fold(order) -> dict:
        node = None
        for e in order:
            node, _ = nodes.apply(node, e, micros(e["timestamp"]))
        return nodes.record(NODE, node)

    assert fold(events[:late] + events[late + 1:] + [events[late]]) == fold(events)
