"""Observations (pipeline/observed.py) and how the worker folds them (streams/operations.py): the API's
answer closes an overdue operation, reconciled, heals a stuck node, and changes nothing it should not."""
from __future__ import annotations

import uuid
from datetime import timedelta

import orjson
import pytest

from pipeline import catalog, codec, events, observed, wire
from pipeline.streams import operations as ops
from pipeline.streams.models import Settings, micros
from tests.support import scripted as s

POWER = "baremetal.node.power_set"
PROVISION = "baremetal.node.provision_set"
CFG = Settings(deadlines={**catalog.OPERATIONS, POWER: 300.0}, stuck_after_s=600.0, late_horizon_s=3600.0)


def answer(node: str, t: float, **fields) -> dict:
    """What Ironic's GET /v1/nodes/{uuid} answers, the node last updated at T0 + t."""
    base = {"uuid": node, "power_state": "power on", "target_power_state": None, "provision_state": "active",
            "target_provision_state": None, "maintenance": False, "maintenance_reason": None, "last_error": None,
            "updated_at": s.at(t).isoformat()}
    return {**base, **fields}


def observe(node: str, ans: dict | None, *, at: float = 1000, about: str = "alert-1", family: str = "baremetal.node") -> dict:
    return observed.observation(family, node, ans, observed_at=s.at(at), about=about, source="ironic")


class Fold:
    """One resource's state, folded event by event, with the watchdog's checks run by hand."""

    def __init__(self) -> None:
        self.state = None
        self.outputs: list = []
        self.expiries: list = []

    def event(self, event: dict) -> ops.Result:
        # through the relay value and back, as the worker reads it
        decoded, ts = codec.read_event(codec.encode_event(event))
        r = ops.on_event(self.state, decoded, ts, CFG)
        self.state = r.state
        self.outputs += r.outputs
        self.expiries += r.expiries
        return r

    def expire(self, kind: str) -> None:
        expiry = next(e for e in self.expiries if e.kind == kind)
        self.expiries.remove(expiry)
        r = ops.on_expiry(self.state, self.state_key, expiry, expiry.due + 1, CFG)
        self.state = r.state
        self.outputs += r.outputs
        self.expiries += r.expiries

    def of(self, kind: str) -> list[dict]:
        return [o.record for o in self.outputs if o.kind == kind]


def power(kind: str, node: str, t: float, **kw) -> dict:
    return s.normalized(s.ironic_body(f"{POWER}.{kind}", node, s.at(t), **kw))


def provision(kind: str, node: str, t: float, **kw) -> dict:
    return s.normalized(s.ironic_body(f"{PROVISION}.{kind}", node, s.at(t), **kw))


def overdue_power_on(node: str) -> Fold:
    f = Fold()
    f.state_key = node
    f.event(power("start", node, 0, to_power="power on", power_state="power off", target_power_state="power on"))
    f.expire("deadline")
    assert [a["kind"] for a in f.of("alert")] == ["missing_end"]
    return f


# --- the record --------------------------------------------------------------------------------


def test_an_observation_is_a_relay_record_of_the_resource() -> None:
    node = str(uuid.uuid4())
    ev = observe(node, answer(node, 12.5))
    assert (ev["event_type"], ev["publisher_id"], ev["family"], ev["topic"]) == (
        "pipeline.observed", "pipeline.reconciler", "baremetal.node", "notifications.baremetal.node")
    assert events.relay_key(ev) == node.encode()
    assert ev["timestamp"] == wire.rfc3339(s.at(12.5))  # when what it reports became true
    assert ev["payload"]["ironic_object.data"]["provision_state"] == "active"
    assert ev["payload"]["observation"] == {"found": True, "observed_at": wire.rfc3339(s.at(1000)),
                                             "about": "alert-1", "source": "ironic"}
    assert codec.decode_event(codec.encode_event(ev)) == ev  # the relay schema carries it as it is


def test_the_same_answer_to_the_same_question_has_the_same_id() -> None:
    node = str(uuid.uuid4())
    first = observe(node, answer(node, 12.5), at=1000)
    again = observe(node, answer(node, 12.5), at=1005)  # a second reconciler, a moment later
    assert first["message_id"] == again["message_id"]
    assert observe(node, answer(node, 13))["message_id"] != first["message_id"]
    assert observe(node, answer(node, 12.5), about="alert-2")["message_id"] != first["message_id"]
    assert observe(node, None)["message_id"] != first["message_id"]


def test_a_404_of_a_node_says_deleted_at_the_time_of_the_answer() -> None:
    node = str(uuid.uuid4())
    ev = observe(node, None, at=50)
    assert ev["payload"]["ironic_object.data"] == {"deleted": True, "uuid": node}
    assert ev["timestamp"] == wire.rfc3339(s.at(50)) and ev["payload"]["observation"]["found"] is False


def test_glance_answers_sit_at_the_payload_root() -> None:
    image = str(uuid.uuid4())
    ev = observe(image, {"id": image, "status": "active", "updated_at": "2026-11-22T00:01:00Z", "size": 8,
                         "checksum": "abc", "name": "not read"}, family="image")
    assert ev["topic"] == "notifications.image" and ev["node_uuid"] is None
    assert ev["payload"]["status"] == "active" and "name" not in ev["payload"]


def test_the_bridge_refuses_an_observation_from_the_bus() -> None:
    node = str(uuid.uuid4())
    body = orjson.dumps({"message_id": "m", "event_type": "pipeline.observed", "priority": "INFO",
                         "publisher_id": "someone", "timestamp": "2026-11-22 00:00:00", "payload": {"uuid": node}})
    with pytest.raises(wire.Rejected, match="reserved for the reconciler's observations"):
        events.normalize(body)


# --- the outcome -------------------------------------------------------------------------------

ST = micros(wire.rfc3339(s.at(100)))


def judged(operation: str, ans: dict | None, asked: dict | None = None, family: str = "baremetal.node"):
    ev = observe(str(uuid.uuid4()), ans, family=family)
    return observed.outcome(operation, ST, asked or {}, observed.read(ev), micros(ev["payload"]["observation"]["observed_at"]))


@pytest.mark.parametrize(("operation", "fields", "asked", "expected"), [
    (POWER, {"power_state": "power on"}, {"to_power": "power on"}, "success"),
    (POWER, {"power_state": "power on"}, {"to_power": "rebooting"}, "success"),
    (POWER, {"power_state": "power off", "last_error": "BMC said no"}, {"to_power": "power on"}, "error"),
    (POWER, {"power_state": "power off", "target_power_state": "power on"}, {"to_power": "power on"}, None),
    (POWER, {"power_state": "error"}, {}, "error"),
    (PROVISION, {"provision_state": "active"}, {}, "success"),
    (PROVISION, {"provision_state": "deploy failed", "last_error": "image"}, {}, "error"),
    (PROVISION, {"provision_state": "deploying", "target_provision_state": "active"}, {}, None),
    (PROVISION, {"provision_state": "wait call-back", "target_provision_state": "active"}, {}, None),
    (PROVISION, {"provision_state": "clean wait", "target_provision_state": None}, {}, None),
    (PROVISION, {"provision_state": "manageable"}, {}, "success"),
    ("baremetal.node.maintenance_set", {"maintenance": True}, {}, "success"),
    ("baremetal.port.create", {}, {}, None),  # no rule: never closed on a guess
], ids=lambda v: str(v))
def test_what_the_node_answer_says_of_an_operation(operation, fields, asked, expected) -> None:
    got = judged(operation, answer("x", 160, **fields), asked)
    assert (got[0] if got else None) == expected
    if got:
        assert got[1] == micros(wire.rfc3339(s.at(160)))  # ends when the node was last updated


def test_an_answer_from_before_the_start_shows_nothing() -> None:
    assert judged(PROVISION, answer("x", 99, provision_state="active")) is None
    assert judged(PROVISION, answer("x", 100, provision_state="active")) == ("success", ST)


def test_a_404_closes_as_gone_and_a_delete_as_success() -> None:
    assert judged(PROVISION, None)[0] == "gone"
    assert judged("baremetal.node.delete", None)[0] == "success"


@pytest.mark.parametrize(("operation", "family", "status", "expected"), [
    ("image.upload", "image", "active", "success"),
    ("image.upload", "image", "killed", "error"),
    ("image.upload", "image", "saving", None),
    ("image.upload", "image", "importing", None),
    ("task", "task", "success", "success"),
    ("task", "task", "failure", "error"),
    ("task", "task", "processing", None),
])
def test_what_glance_says_of_an_upload_or_a_task(operation, family, status, expected) -> None:
    got = judged(operation, {"id": "x", "status": status, "updated_at": "2026-11-22T00:02:00Z"}, family=family)
    assert (got[0] if got else None) == expected


def test_glance_times_are_whole_seconds_so_the_second_of_the_start_counts() -> None:
    # the start at 00:01:40.000: an update at 00:01:40 (read as whole seconds) may be after it
    got = judged("image.upload", {"id": "x", "status": "active", "updated_at": "2026-11-22T00:01:40Z"}, family="image")
    assert got == ("success", ST)
    before = judged("image.upload", {"id": "x", "status": "active", "updated_at": "2026-11-22T00:01:39Z"}, family="image")
    assert before is None


def test_drift_compares_power_provision_and_maintenance() -> None:
    record = {"power_state": "power on", "provision_state": "active", "maintenance": None}
    assert observed.drift(record, answer("x", 0)) == []
    assert observed.drift(record, answer("x", 0, power_state="power off", maintenance=True)) == [
        "power_state", "maintenance"]
    assert observed.drift(None, answer("x", 0)) == list(observed.DRIFT_FIELDS)


# --- the worker's fold -------------------------------------------------------------------------


def test_an_overdue_operation_the_api_shows_finished_closes_reconciled() -> None:
    node = str(uuid.uuid4())
    f = overdue_power_on(node)
    obs = observe(node, answer(node, 400, power_state="power on"), about=f.of("alert")[0]["alert_id"])
    f.event(obs)
    (op,) = f.of("operation")
    assert (op["outcome"], op["reconciled"], op["late"], op["end_message_id"]) == ("success", True, True, obs["message_id"])
    assert op["ended_at"] == micros(wire.rfc3339(s.at(400))) and op["duration_ms"] == 400_000
    missing, closed = f.of("alert")
    assert (closed["kind"], closed["resolution"], closed["resolves"]) == ("reconciled", "success", missing["alert_id"])
    assert f.state["ops"] == {}
    assert f.of("node_state")[-1]["power_state"] == "power on"  # healed
    assert f.of("node_state")[-1]["power_changed_by"] == obs["message_id"]


def test_an_answer_that_shows_it_still_running_keeps_it_open() -> None:
    node = str(uuid.uuid4())
    f = overdue_power_on(node)
    f.event(observe(node, answer(node, 400, power_state="power off", target_power_state="power on")))
    assert f.of("operation") == [] and POWER in f.state["ops"]


def test_an_operation_not_yet_overdue_is_left_to_its_end() -> None:
    """Before the deadline the end may still be on its way: an answer only moves the node."""
    node = str(uuid.uuid4())
    f = Fold()
    f.state_key = node
    f.event(power("start", node, 0, to_power="power on"))
    f.event(observe(node, answer(node, 10, power_state="power on"), about="sweep"))
    assert f.of("operation") == [] and POWER in f.state["ops"]
    assert f.of("node_state")[-1]["power_state"] == "power on"
    end = f.event(power("end", node, 11, power_state="power on"))
    assert [o.record["reconciled"] for o in end.outputs if o.kind == "operation"] == [False]


def test_the_late_end_of_a_reconciled_operation_adds_no_record() -> None:
    node = str(uuid.uuid4())
    f = overdue_power_on(node)
    f.event(observe(node, answer(node, 400, power_state="power on")))
    r = f.event(power("end", node, 399, power_state="power on"))
    assert [o.kind for o in r.outputs if o.kind != "node_state"] == []  # the end still dates the node's change
    assert len(f.of("operation")) == 1
    assert [c.what for c in r.counters] == ["late_after_reconciled"]


def test_a_second_copy_of_an_observation_changes_nothing() -> None:
    node = str(uuid.uuid4())
    f = overdue_power_on(node)
    obs = observe(node, answer(node, 400, power_state="power on"))
    f.event(obs)
    again = f.event(observe(node, answer(node, 400, power_state="power on"), at=2000))  # another reconciler
    assert again.verdict == "duplicate" and again.outputs == []


def test_a_failed_deploy_closes_as_error_with_the_state_it_ended_in() -> None:
    node = str(uuid.uuid4())
    f = Fold()
    f.state_key = node
    f.event(provision("start", node, 0, provision_state="deploying", target_provision_state="active",
                      previous_provision_state="available", event="deploy"))
    f.expire("deadline")
    f.event(observe(node, answer(node, 5000, provision_state="deploy failed", last_error="no image")))
    (op,) = f.of("operation")
    assert (op["outcome"], op["provision_state"], op["fsm_event"], op["reconciled"]) == (
        "error", "deploy failed", "deploy", True)
    assert f.of("node_state")[-1]["last_error"] == "no image"


def test_a_node_gone_closes_its_operation_as_gone() -> None:
    node = str(uuid.uuid4())
    f = overdue_power_on(node)
    f.event(observe(node, None, at=900))
    (op,) = f.of("operation")
    assert (op["outcome"], op["ended_at"]) == ("gone", micros(wire.rfc3339(s.at(900))))
    assert f.of("node_state")[-1]["deleted"] is True


def test_a_stuck_node_the_api_shows_moved_on_is_healed() -> None:
    node = str(uuid.uuid4())
    f = Fold()
    f.state_key = node
    # a provision_set.success step with no operation: the node enters 'deploying' and stays
    f.event(provision("success", node, 0, provision_state="deploying", target_provision_state="active"))
    f.expire("stuck")
    (stuck,) = f.of("alert")
    assert stuck["kind"] == "stuck_state"
    f.event(observe(node, answer(node, 700, provision_state="deploying", target_provision_state="active")))
    assert len(f.of("alert")) == 1  # the API says it is still deploying: still stuck
    f.event(observe(node, answer(node, 800, provision_state="active")))
    healed = f.of("alert")[-1]
    assert (healed["kind"], healed["resolution"], healed["resolves"], healed["provision_state"]) == (
        "reconciled", "healed", stuck["alert_id"], "active")
    assert f.of("node_state")[-1]["provision_state"] == "active"


def test_the_observation_does_not_move_the_lane_clock() -> None:
    """The reconciler does not vouch that every notification before its answer is in Kafka."""
    from types import SimpleNamespace

    from pipeline.streams.app import Metrics, Recent, WorkerSettings
    from pipeline.streams.processor import DictStore, Processor

    settings = WorkerSettings(machine=CFG, replay_guard_s=0.0)
    rt = SimpleNamespace(settings=settings, metrics=Metrics(), reporter=Recent(), ready=False)
    proc = Processor(rt, DictStore(), DictStore(), sink=lambda *a: None)
    node = str(uuid.uuid4())
    start = power("start", node, 0)
    obs = observe(node, answer(node, 5000))
    lane = ("notifications.baremetal.node", 0)
    proc.handle_batch([(*lane, node.encode(), codec.encode_event(start))])
    before = proc.watchdog.watermark(lane)
    proc.handle_batch([(*lane, node.encode(), codec.encode_event(obs))])
    assert proc.watchdog.watermark(lane) == before
    assert micros(obs["timestamp"]) - micros(start["timestamp"]) == 5000 * 1_000_000
    assert timedelta(microseconds=before) < timedelta(seconds=10**10)
