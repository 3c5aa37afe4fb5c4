"""The lifecycle model: deterministic, time-ordered, every operation closed, Ironic's own rules for
provision_set statuses, realistic durations; and the faults stage's bookkeeping."""
from __future__ import annotations

import collections
from datetime import datetime

import pytest

from pipeline.simulate.faults import Faults
from pipeline.simulate.fleet import Fleet
from pipeline.simulate.model import Event

START = datetime(2026, 11, 22, 0, 0, 0)
# ironic/common/states.py
UNSTABLE = {"deploying", "wait call-back", "cleaning", "clean wait", "verifying", "deleting", "inspecting",
            "inspect wait", "adopting", "rescuing", "rescue wait", "unrescuing", "servicing", "service wait"}


def run(nodes: int = 200, images: int = 30, count: int = 6000, seed: int = 1, faults: Faults | None = None,
        sweep: bool = True) -> tuple[Fleet, list[Event]]:
    fleet = Fleet(nodes, images, seed=seed, start=START, think_s=900.0)

    def stream():
        for n, event in enumerate(fleet.events(), 1):
            if n == count:
                fleet.close()
            yield event
        if sweep:
            yield from fleet.sweep()

    source = faults.apply(stream()) if faults else stream()
    return fleet, list(source)


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    _, a = run(seed=4)
    _, b = run(seed=4)
    _, c = run(seed=5)
    assert [(e.message_id, e.event_type, e.timestamp, e.payload) for e in a] == \
           [(e.message_id, e.event_type, e.timestamp, e.payload) for e in b]
    assert [e.message_id for e in a[:50]] != [e.message_id for e in c[:50]]


def test_time_only_moves_forward_and_every_operation_ends() -> None:
    fleet, stream = run()
    stamps = [e.timestamp for e in stream]
    assert stamps == sorted(stamps)
    assert len({e.message_id for e in stream}) == len(stream)
    assert fleet.operations and all(op.outcome in ("end", "error") for op in fleet.operations)
    c = fleet.counts
    assert c["started"] == c["ended"] + c["errored"] == len(fleet.operations)


def test_provision_set_status_follows_ironic_rules() -> None:
    """task_manager._notify_provision_state_change: fail/error -> error; stable->unstable -> start;
    unstable->stable -> end; anything else -> success."""
    _, stream = run(nodes=300, count=8000)
    seen = collections.Counter()
    for e in stream:
        if not e.event_type.startswith("baremetal.node.provision_set."):
            continue
        data = e.payload["ironic_object.data"]
        prev_unstable = data["previous_provision_state"] in UNSTABLE
        new_unstable = data["provision_state"] in UNSTABLE
        if data["event"] in ("fail", "error"):
            status = "error"
        elif (prev_unstable, new_unstable) == (False, True):
            status = "start"
        elif (prev_unstable, new_unstable) == (True, False):
            status = "end"
        else:
            status = "success"
        assert e.event_type.rsplit(".", 1)[1] == status, (data["previous_provision_state"], data["provision_state"])
        assert e.priority == ("ERROR" if status == "error" else "INFO")
        assert e.payload["ironic_object.name"] == "NodeSetProvisionStatePayload"
        seen[(data["previous_provision_state"], data["event"], data["provision_state"])] += 1
    for life in (("available", "deploy", "deploying"), ("deploying", "done", "active"),
                 ("active", "deleted", "deleting"), ("deleting", "clean", "cleaning"),
                 ("cleaning", "done", "available"), ("manageable", "inspect", "inspecting"),
                 ("inspecting", "done", "manageable"), ("manageable", "provide", "cleaning"),
                 ("wait call-back", "fail", "deploy failed"), ("deploy failed", "deleted", "deleting"),
                 ("active", "rebuild", "deploying"), ("enroll", "manage", "verifying")):
        assert seen[life], life


@pytest.mark.parametrize("operation, low, high", [
    ("baremetal.node.power_set", 5, 30),
    ("baremetal.node.maintenance_set", 0.05, 0.6),
    ("baremetal.port.create", 0.05, 0.6),
])
def test_durations_are_realistic(operation: str, low: float, high: float) -> None:
    fleet, _ = run(nodes=300, count=8000)
    durations = [(op.ended_at - op.started_at).total_seconds() for op in fleet.operations
                 if op.operation == operation and not op.exempt]
    assert len(durations) > 10
    assert low <= min(durations) and max(durations) <= high


def test_deploys_and_cleans_take_minutes() -> None:
    fleet, stream = run(nodes=300, count=8000)
    by_start = {op.start_message_id: op for op in fleet.operations}
    deploys, cleans = [], []
    for e in stream:
        if e.event_type == "baremetal.node.provision_set.start":
            op = by_start[e.message_id]
            if op.outcome != "end":
                continue
            minutes = (op.ended_at - op.started_at).total_seconds() / 60
            fsm = e.payload["ironic_object.data"]["event"]
            (deploys if fsm in ("deploy", "rebuild") else cleans if fsm in ("provide", "deleted") else []).append(minutes)
    assert deploys and cleans
    assert 5 <= min(deploys) and max(deploys) <= 21  # 5-20 min plus the reboot inside
    assert 10 <= min(cleans) and max(cleans) <= 41


def test_sweep_moves_event_time_past_every_deadline() -> None:
    fleet, stream = run()
    last_regular = max(e.timestamp for e in stream if not (e.op and e.op.exempt) and e.event_type != "image.update")
    sweep = [e for e in stream if e.op is not None and e.op.exempt]
    assert len(sweep) == 2 * len(fleet.nodes)
    latest_deadline = max(op.started_at.timestamp() + op.deadline_s for op in fleet.operations if not op.exempt)
    assert min(e.timestamp for e in sweep).timestamp() > latest_deadline + 60
    assert min(e.timestamp for e in sweep) > last_regular
    assert {e.event_type for e in sweep} == {"baremetal.node.console_set.start", "baremetal.node.console_set.end"}


def test_loss_drops_terminal_events_only_and_records_them() -> None:
    faults = Faults(loss=0.1, seed=2)
    fleet, stream = run(faults=faults)
    sent = {e.message_id for e in stream}
    dropped = [op for op in fleet.operations if op.end_dropped]
    assert faults.counts["dropped"] == len(dropped)
    assert 0.05 < len(dropped) / len(fleet.operations) < 0.15
    for op in fleet.operations:
        assert op.start_message_id in sent
        assert (op.end_message_id in sent) is (not op.end_dropped)
        assert op.expected == ("missing_end" if op.end_dropped or op.end_anonymous else op.outcome)
    assert not any(op.end_dropped for op in fleet.operations if op.exempt)


def test_a_lost_end_is_never_superseded_before_its_deadline() -> None:
    """The truth must be exact: after a lost end, the same resource starts the same operation only
    once the deadline (plus the settle margin) has passed."""
    faults = Faults(loss=0.2, seed=9)
    fleet, _ = run(nodes=100, count=8000, faults=faults)
    by_key = collections.defaultdict(list)
    for op in fleet.operations:
        by_key[(op.resource_uuid, op.operation)].append(op)
    checked = 0
    for ops in by_key.values():
        for before, after in zip(ops, ops[1:]):
            if before.expected == "missing_end":
                checked += 1
                assert (after.started_at - before.started_at).total_seconds() > before.deadline_s + 60
    assert checked > 20


def test_duplicates_and_reorder_window() -> None:
    faults = Faults(duplicates=0.1, reorder=4, seed=3)
    fleet, stream = run(faults=faults, sweep=False)
    counts = collections.Counter(e.message_id for e in stream)
    assert sum(n - 1 for n in counts.values()) == faults.counts["duplicated"] > 0
    assert all(n <= 2 for n in counts.values())
    order = {}
    for position, e in enumerate(stream):
        order.setdefault(e.message_id, position)
    original = [e.message_id for e in run(sweep=False)[1]]
    moved = max(abs(order[m] - i) for i, m in enumerate(original))
    assert 0 < moved <= 4 + faults.counts["duplicated"]
    assert any(op.duplicated for op in fleet.operations)


@pytest.mark.parametrize("kwargs", [{"loss": 1.5}, {"duplicates": -0.1}, {"reorder": -1}])
def test_bad_fault_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Faults(**kwargs)
