"""catalog: the table's shape, the operations and their deadlines, classification by shape."""
from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import catalog

PHASES = {"start", "end", "error", "success", None}


def test_rows_are_unique_per_family_and_action():
    keys = [(r.family, r.action) for r in catalog.ROWS]
    assert len(keys) == len(set(keys))


def test_operations_and_deadlines():
    ops = catalog.OPERATIONS
    assert ops["baremetal.node.power_set"] == 300
    assert ops["baremetal.node.provision_set"] == 4 * 3600
    assert ops["baremetal.node.create"] == 60
    assert ops["baremetal.deploytemplate.update"] == ops["baremetal.deploy_template.update"] == 60
    assert ops["image.upload"] == 3600
    assert ops["task"] == 86400
    assert "baremetal.node.power_state_corrected" not in ops
    assert all(d > 0 for d in ops.values())
    with pytest.raises(TypeError):
        ops["x"] = 1  # type: ignore[index]


def test_every_known_event_type_classifies_consistently():
    for event_type in catalog.known_event_types():
        for priority in ("info", "error", "warn"):
            cls = catalog.classify(event_type, priority)
            assert cls.known
            assert cls.phase in PHASES
            assert event_type.startswith(f"{cls.family}.{cls.action}")
            if cls.operation is None:
                assert cls.deadline_s is None
            else:
                assert cls.deadline_s == catalog.OPERATIONS[cls.operation]
            assert cls.service in {"baremetal", "image"}


def test_ironic_status_decides_not_priority():
    start = catalog.classify("baremetal.node.provision_set.start", "error")
    assert (start.phase, start.operation) == ("start", "baremetal.node.provision_set")
    success = catalog.classify("baremetal.node.provision_set.success", "info")
    assert (success.phase, success.operation, success.deadline_s) == ("success", None, None)


def test_glance_priority_rules():
    assert catalog.classify("image.upload", "info").phase == "end"
    assert catalog.classify("image.upload", "error").phase == "error"
    assert catalog.classify("image.upload", "critical").phase == "error"
    assert catalog.classify("image.upload", "warn").phase is None
    assert catalog.classify("image.create", "error").phase == "error"
    assert catalog.classify("image.create", "error").operation is None
    assert catalog.classify("task.processing", "info").operation == "task"


def test_where_uuids_live():
    port = catalog.classify("baremetal.port.create.end", "info")
    assert port.resource_paths == (("ironic_object.data", "uuid"),)
    assert port.node_paths == (("ironic_object.data", "node_uuid"),) and not port.node_is_resource
    node = catalog.classify("baremetal.node.power_set.end", "info")
    assert node.node_is_resource
    chassis = catalog.classify("baremetal.chassis.delete.end", "info")
    assert chassis.node_paths == () and not chassis.node_is_resource
    assert catalog.classify("image.send", "info").resource_paths == (("image_id",),)
    assert catalog.classify("image.member.create", "info").resource_paths == (("image_id",),)
    assert catalog.classify("task.run", "info").resource_paths[0] == ("id",)
    metadef = catalog.classify("metadef_tag.create", "info")
    assert metadef.resource_paths == () and not metadef.uuid_from_text and metadef.service == "image"


@pytest.mark.parametrize("event_type, expected", [
    ("compute.instance.create.start", ("compute", "compute.instance", "create", "start", None)),
    ("compute.instance.create", ("compute", "compute.instance", "create", None, None)),
    ("hardware.ipmi.metrics.update", ("hardware", "hardware.ipmi.metrics", "update", None, None)),
    ("ironic.metrics", ("ironic", "ironic", "metrics", None, None)),
    ("ping", ("ping", "ping", "ping", None, None)),
    ("thing.start", ("thing", "thing", "thing", "start", None)),
    ("baremetal.node.inspect.error", ("baremetal", "baremetal.node", "inspect", "error", "baremetal.node.inspect")),
    ("baremetal.node.service.success", ("baremetal", "baremetal.node", "service", "success", None)),
    ("baremetal.node.power_set.success", ("baremetal", "baremetal.node", "power_set", "success", None)),
    ("task.cancel", ("image", "task", "cancel", None, None)),
    ("metadef_namespace.rename", ("image", "metadef_namespace", "rename", None, None)),
])
def test_unknown_event_types_by_shape(event_type, expected):
    cls = catalog.classify(event_type, "info")
    assert not cls.known
    assert (cls.service, cls.family, cls.action, cls.phase, cls.operation) == expected
    assert (cls.deadline_s is None) == (cls.operation is None)


segment = st.text(alphabet=string.ascii_letters + string.digits + "_-:", min_size=1, max_size=12)


@given(st.lists(segment, min_size=1, max_size=8), st.sampled_from(sorted(["info", "error", "warn", "audit"])))
def test_classify_never_raises_for_a_dotted_name(segments, priority):
    event_type = ".".join(segments)
    cls = catalog.classify(event_type, priority)
    assert cls.family and cls.action and cls.service in (segments[0], "image")
    assert cls.phase in PHASES
    assert event_type.startswith(cls.family)
