"""Observations per source partition: a partition that leaves is forgotten, one that arrives is
reloaded without counting twice what the agent reported while the history was read."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from pipeline.web.observe import Observations


def op(i: int, uuid: str, ms: float = 1000.0, outcome: str = "success") -> dict:
    return {"op_id": f"op-{i}", "resource_uuid": uuid, "operation": "baremetal.node.deploy", "outcome": outcome,
            "duration_ms": ms, "ended_at": "2026-11-22T01:00:00Z"}


UUIDS = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(60)]


def test_partition_is_the_bridge_partition_of_the_resource() -> None:
    obs = Observations(partitions=6)
    for uuid in UUIDS:
        assert obs.partition_of({"resource_uuid": uuid}) == DefaultPartitioner()(uuid.encode(), list(range(6)), list(range(6)))


def test_forget_and_reload_without_double_counting() -> None:
    obs = Observations(window_s=600, slice_s=60, partitions=6)
    for i, uuid in enumerate(UUIDS):
        obs.operation(op(i, uuid))
    assert obs.durations.stats()["baremetal.node.deploy"]["count"] == 60
    p = obs.partition_of({"resource_uuid": UUIDS[0]})
    mine = [i for i, u in enumerate(UUIDS) if obs.partition_of({"resource_uuid": u}) == p]
    obs.forget([p])
    assert obs.durations.stats()["baremetal.node.deploy"]["count"] == 60 - len(mine)

    obs.start_loading(p)
    obs.operation(op(mine[0], UUIDS[mine[0]]))  # the agent reports one while the tail is read
    obs.alert({"alert_id": "a-new", "kind": "missing_end", "resource_uuid": UUIDS[mine[0]]})
    history = [op(i, UUIDS[i]) for i in mine]  # the tail holds that one too
    obs.loaded(p, history, [{"alert_id": "a-old", "kind": "orphan_end", "resource_uuid": UUIDS[mine[1]]},
                            {"alert_id": "a-new", "kind": "missing_end", "resource_uuid": UUIDS[mine[0]]}])
    assert obs.durations.stats()["baremetal.node.deploy"]["count"] == 60
    assert [a["alert_id"] for a in obs.recent_alerts] == ["a-old", "a-new"]
    assert obs.alerts_by_type == {"missing_end": 1}  # counters are what this process saw


def test_recent_alerts_are_bounded_per_partition() -> None:
    obs = Observations(recent_alerts=3, partitions=1)
    for i in range(10):
        obs.alert({"alert_id": str(i), "kind": "stuck_state", "resource_uuid": UUIDS[0], "raised_at": i})
    assert [a["alert_id"] for a in obs.recent_alerts] == ["7", "8", "9"]
