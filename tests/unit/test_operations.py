"""The pairing state machine as plain functions: (state, event) -> (state, outputs, expiries, counters)."""
from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import catalog
from pipeline.streams import dedup, operations as ops, scripted as s
from pipeline.streams.models import SECOND, Expiry, Settings, micros

POWER = "baremetal.node.power_set"
CFG = Settings(deadlines={**catalog.OPERATIONS, POWER: 300.0}, orphan_grace_s=120.0, late_horizon_s=3600.0,
               dedup_window_s=600.0, dedup_max_ids=4)


def ev(kind: str, node: str, t: float, **kw) -> dict:
    return s.normalized(s.ironic_body(f"{POWER}.{kind}", node, s.at(t), **kw))


def fold(events, state=None):
    outputs, expiries, counters = [], [], []
    for e in events:
        r = ops.on_event(state, e, micros(e["timestamp"]), CFG)
        state = r.state
        outputs += r.outputs
        expiries += r.expiries
        counters += r.counters
    return state, outputs, expiries, counters


def kinds(outputs, kind):
    return [o.record for o in outputs if o.kind == kind]


def test_the_callers_state_is_not_modified() -> None:
    n = str(uuid.uuid4())
    state, *_ = fold([ev("start", n, 0)])
    before = repr(state)
    ops.on_event(state, ev("end", n, 1), micros(ev("end", n, 1)["timestamp"]), CFG)
    assert repr(state) == before


def test_start_schedules_its_deadline() -> None:
    n = str(uuid.uuid4())
    start = ev("start", n, 0)
    _, _, expiries, counters = fold([start])
    assert expiries == [Expiry(micros(start["timestamp"]) + 300 * SECOND, "deadline", POWER, start["message_id"])]
    assert [c.what for c in counters] == ["started"]


def test_an_older_start_arriving_second_is_the_superseded_one() -> None:
    n = str(uuid.uuid4())
    newer, older, end = ev("start", n, 100), ev("start", n, 0), ev("end", n, 101)
    _, outputs, _, counters = fold([newer, older, end])
    recs = kinds(outputs, "operation")
    assert [(r["outcome"], r["start_message_id"]) for r in recs] == [
        ("superseded", older["message_id"]), ("success", newer["message_id"])]
    assert recs[0]["ended_at"] is None and recs[0]["duration_ms"] is None


def test_two_terminals_without_a_start_the_older_is_orphaned_at_once() -> None:
    n = str(uuid.uuid4())
    e1, e2 = ev("end", n, 0), ev("error", n, 5)
    state, outputs, _, _ = fold([e1, e2])
    (alert,) = kinds(outputs, "alert")
    assert (alert["kind"], alert["message_id"]) == ("orphan_end", e1["message_id"])
    assert state["orph"][POWER]["em"] == e2["message_id"]


def test_a_start_after_the_grace_does_not_pair_with_an_old_end() -> None:
    n = str(uuid.uuid4())
    end, start = ev("end", n, 0), ev("start", n, 500)
    state, outputs, _, _ = fold([end, start])
    assert [a["kind"] for a in kinds(outputs, "alert")] == ["orphan_end"]
    assert kinds(outputs, "operation") == []
    assert state["ops"][POWER]["sm"] == start["message_id"]


def test_expiry_is_ignored_when_stale() -> None:
    n = str(uuid.uuid4())
    start, end = ev("start", n, 0), ev("end", n, 1)
    state, _, expiries, _ = fold([start, end])
    r = ops.on_expiry(state, n, expiries[0], expiries[0].due + 1, CFG)
    assert (r.changed, r.outputs) == (False, [])


def test_missing_end_then_forgotten_after_the_late_horizon() -> None:
    n = str(uuid.uuid4())
    state, _, expiries, _ = fold([ev("start", n, 0)])
    r = ops.on_expiry(state, n, expiries[0], expiries[0].due + 1, CFG)
    assert [o.record["kind"] for o in r.outputs] == ["missing_end"]
    (forget,) = r.expiries
    assert forget.kind == "forget" and forget.due == expiries[0].due + 3600 * SECOND
    # the same check again (a replayed heap entry) raises nothing
    again = ops.on_expiry(r.state, n, expiries[0], expiries[0].due + 2, CFG)
    assert again.outputs == [] and not again.changed
    gone = ops.on_expiry(r.state, n, forget, forget.due + 1, CFG)
    assert gone.changed and gone.state["ops"] == {} and gone.outputs == []


def test_pending_lists_every_check_of_a_stored_state() -> None:
    n, m = str(uuid.uuid4()), str(uuid.uuid4())
    state, _, expiries, _ = fold([ev("start", n, 0)])
    assert ops.pending(state, CFG) == expiries
    orphan_state, _, orphan_expiries, _ = fold([ev("end", m, 0)])
    assert ops.pending(orphan_state, CFG) == orphan_expiries
    assert [e.kind for e in orphan_expiries] == ["orphan"]


def test_outputs_have_deterministic_ids() -> None:
    n = str(uuid.uuid4())
    events = [ev("start", n, 0), ev("end", n, 1)]
    _, first, _, _ = fold(events)
    _, second, _, _ = fold(events)
    assert [o.id for o in first] == [o.id for o in second]
    assert len({o.id for o in first}) == len(first)


def test_dedup_is_bounded_and_counts_what_it_can_no_longer_tell() -> None:
    n = str(uuid.uuid4())
    events = [ev("start", n, t) for t in (0, 10, 20, 30, 40, 50)]  # max 4 ids
    state, *_ = fold(events)
    assert len(state["d"]) == 4
    assert state["dh"] == micros(events[1]["timestamp"])  # the two oldest were forgotten
    r = ops.on_event(state, events[0], micros(events[0]["timestamp"]), CFG)
    assert r.verdict == "beyond_horizon" and not r.changed
    r = ops.on_event(state, events[5], micros(events[5]["timestamp"]), CFG)
    assert r.verdict == "duplicate"


def test_dedup_window_is_event_time() -> None:
    st = {"d": [], "dh": 0}
    for i, t in enumerate((1000, 1100, 1700)):
        dedup.remember(st, i, t * SECOND, 600 * SECOND, 100)
    assert [h for h, _ in st["d"]] == [1, 2] and st["dh"] == 1000 * SECOND
    assert dedup.check(st, 9, 1000 * SECOND) == "beyond_horizon"
    assert dedup.check(st, 9, 1050 * SECOND) == "new"


def test_unpaired_glance_events_open_nothing() -> None:
    image = str(uuid.uuid4())
    e = s.normalized(s.glance_body("image.activate", image, s.at(0)))
    state, outputs, expiries, counters = fold([e])
    assert (outputs, expiries, counters, state["ops"]) == ([], [], [], {})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(), st.integers()), max_size=5))
def test_output_id_is_uuid5_of_the_joined_parts(parts) -> None:
    import uuid

    from pipeline.streams.operations import _NS, output_id

    expected = str(uuid.uuid5(_NS, "|".join("" if p is None else str(p) for p in parts)))
    assert output_id(*parts) == expected
