"""A scripted fleet of bare-metal nodes powering on, for the tests that run the product's image and
pods: each node's power_set.start and .end published through oslo.messaging's own Notifier on a
topic private to the test, and the walking skeleton's accounting of what comes out: one
power_set operation per node, a success, paired from that node's own start and end."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pipeline import codec
from tests.support.bridge import read_all, run
from tests.support.oslo_rabbit import OsloPublisher, power_set_payload


def ironic_topic(unique: str) -> str:
    """The notification topic of the test's Ironic: only its own bridge queue is bound to it."""
    return f"ironic_versioned_notifications_{unique}"


def binding(unique: str) -> str:
    return f"ironic:{ironic_topic(unique)}.*"


@dataclass
class Fleet:
    unique: str
    size: int
    nodes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = self.nodes or [str(uuid.uuid4()) for _ in range(self.size)]

    def _publish(self, nodes: list[str], phase: str) -> None:
        with OsloPublisher("ironic", topic=ironic_topic(self.unique)) as ironic:
            for node in nodes:
                payload = power_set_payload(node)
                if phase == "end":
                    payload["ironic_object.data"]["power_state"] = "power on"
                ironic.publish(f"baremetal.node.power_set.{phase}", payload)

    def start(self, nodes: list[str] | None = None) -> None:
        self._publish(self.nodes if nodes is None else nodes, "start")

    def end(self, nodes: list[str] | None = None) -> None:
        self._publish(self.nodes if nodes is None else nodes, "end")


def operations(output_prefix: str, expected: int, timeout: float = 120) -> dict[str, list[dict]]:
    """node -> its operation records on `<output_prefix>operations`, once `expected` arrived (and a
    few seconds more, so that duplicates would show) or `timeout` passed."""
    records = run(read_all(f"{output_prefix}operations", expected, timeout=timeout, settle_s=3))
    by_node: dict[str, list[dict]] = {}
    for record in records:
        if record.topic != f"{output_prefix}operations":
            continue
        op = codec.decode_value(record.value)
        assert record.key == op["node_uuid"].encode(), op
        by_node.setdefault(op["node_uuid"], []).append(op)
    return by_node


def check_accounted(by_node: dict[str, list[dict]], nodes: list[str], detail: str = "", exclusive: bool = True) -> None:
    """Every node's power-on came out exactly once, paired and successful; with `exclusive`, nothing
    else came out (else other fleets' operations on the same topics are left alone)."""
    missing = sorted(set(nodes) - set(by_node))
    assert not missing, f"{len(missing)} of {len(nodes)} operations missing, e.g. {missing[:3]}\n{detail}"
    extra = sorted(set(by_node) - set(nodes))
    assert not exclusive or not extra, f"operations for nodes never sent: {extra[:3]}"
    for node in nodes:
        ops = by_node[node]
        assert len(ops) == 1, f"{node}: {len(ops)} operation records (duplicates)"
        op = ops[0]
        assert op["operation"] == "baremetal.node.power_set" and op["outcome"] == "success", op
        assert op["to_power"] == "power on", op
        assert op["start_message_id"] and op["end_message_id"] and op["start_message_id"] != op["end_message_id"], op
        assert op["duration_ms"] >= 0, op
