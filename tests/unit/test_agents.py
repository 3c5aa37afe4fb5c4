"""Acceptance 1: the agent under faust's test_context, fed relay records as the bridge writes them
(real wire bodies, normalized, Avro-encoded), with every output captured. Each test asserts the exact
records emitted: operations and alerts in full, node-state records where the test is about them."""
from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from pipeline import catalog, codec
from pipeline.streams import state as state_view
from pipeline.streams.agents import DictStore
from pipeline.streams.app import WorkerSettings, create_app
from pipeline.streams.models import Settings
from tests.support import scripted as s

POWER = "baremetal.node.power_set"
PROVISION = "baremetal.node.provision_set"
PUB = "ironic-conductor.conductor-1"
GLANCE = "image.glance-api-1"


class Harness:
    def __init__(self, rt, agent) -> None:
        self.rt = rt
        self.agent = agent
        self.sent: list = []
        self.clock_node = str(uuid.uuid4())  # its events move the watermark, it has no operations
        rt.processor.sink = lambda kind, key, out, partition: self.sent.append(out)
        # plain dicts for the tables: no changelog records, which need a broker
        rt.processor.resources, rt.processor.loss = DictStore(), DictStore()

    async def put(self, body: bytes) -> dict:
        event = s.normalized(body)
        _, key, value, headers = s.relay(event)
        await self.put_record(key, value, headers)
        return event

    async def put_record(self, key: bytes | None, value: bytes, headers: list | None = None) -> None:
        read = self.rt.metrics.events
        await self.agent.put(key=key, value=value, partition=0, headers=headers)
        # put() returns once the stream has the record; the body folds it with its batch
        await self.folded(read + 1)

    async def folded(self, events: int) -> None:
        """Wait (2 s at most) until the body has folded `events` records in all."""
        for _ in range(400):
            if self.rt.metrics.events >= events:
                break
            await asyncio.sleep(0.005)

    def of(self, kind: str) -> list[dict]:
        """The records of `kind` sent, times as datetimes (as a reader of the topic gets them)."""
        return [codec.with_datetimes(kind, o.record) for o in self.sent if o.kind == kind and o.key != self.clock_node]

    async def advance(self, seconds: float) -> None:
        """An event of another node at T0 + seconds: moves partition 0's watermark."""
        await self.put(s.ironic_body("baremetal.node.power_state_corrected.success", self.clock_node, s.at(seconds)))

    def loss(self) -> dict:
        return state_view.loss_totals(self.rt.processor.loss.items())


@pytest.fixture()
async def h():
    machine = Settings(deadlines={**catalog.OPERATIONS, POWER: 300.0}, orphan_grace_s=120.0, stuck_after_s=1800.0)
    settings = WorkerSettings(machine=machine, app_id=f"unit-{uuid.uuid4().hex[:8]}", store="memory://",
                              web_enabled=False, lateness_s=0.0, replay_guard_s=0.0)
    rt = create_app(settings, partitions=1)
    app = rt.app
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    async with rt.agent.test_context() as agent:
        yield Harness(rt, agent)


def op(node: str, operation: str, outcome: str, start: dict | None, end: dict | None, *, late: bool = False,
       to_power=None, prev=None, new=None, fsm=None, publisher=PUB) -> dict:
    from pipeline.streams.operations import output_id
    from pipeline.wire import parse_timestamp

    st = parse_timestamp(start["timestamp"]) if start else None
    et = parse_timestamp(end["timestamp"]) if end else None
    return {
        "op_id": output_id("operation", node, operation, start and start["message_id"], end and end["message_id"]),
        "resource_uuid": node, "node_uuid": node if operation.startswith("baremetal") else None,
        "operation": operation, "outcome": outcome, "started_at": st, "ended_at": et,
        "duration_ms": max(0, (et - st) // timedelta(milliseconds=1)) if st and et else None,
        "start_message_id": start and start["message_id"], "end_message_id": end and end["message_id"],
        "publisher_id": publisher, "to_power": to_power, "previous_provision_state": prev,
        "provision_state": new, "fsm_event": fsm, "late": late, "reconciled": False,
    }


def power(kind: str, node: str, t: float, **kw) -> bytes:
    return s.ironic_body(f"{POWER}.{kind}", node, s.at(t), **kw)


async def test_start_then_end(h: Harness) -> None:
    n = str(uuid.uuid4())
    a = await h.put(power("start", n, 0, to_power="power on"))
    b = await h.put(power("end", n, 12.5, power_state="power on"))
    assert h.of("operation") == [op(n, POWER, "success", a, b, to_power="power on", prev="available", new="available")]
    assert h.of("operation")[0]["duration_ms"] == 12500
    assert h.of("alert") == []
    assert [r["power_state"] for r in h.of("node_state")] == ["power off", "power on"]
    assert h.loss()[(PUB, POWER)] == {"started": 1, "ended": 1}


async def test_end_then_start(h: Harness) -> None:
    """Ironic's race: the end is emitted (and stamped) before the start."""
    n = str(uuid.uuid4())
    b = await h.put(power("end", n, 10, power_state="power on"))
    assert h.of("operation") == []
    a = await h.put(power("start", n, 10.2, to_power="power on"))
    assert h.of("operation") == [op(n, POWER, "success", a, b, to_power="power on", prev="available", new="available")]
    assert h.of("operation")[0]["duration_ms"] == 0
    await h.advance(10_000)  # far past grace and deadline: nothing left to raise
    assert h.of("alert") == []
    # the end (newer power state) wins over the start's older snapshot
    assert h.of("node_state")[-1]["power_state"] == "power on"


async def test_start_then_error(h: Harness) -> None:
    n = str(uuid.uuid4())
    a = await h.put(power("start", n, 0, to_power="power on"))
    b = await h.put(power("error", n, 61, last_error="IPMI timeout"))
    assert h.of("operation") == [op(n, POWER, "error", a, b, to_power="power on", prev="available", new="available")]
    assert h.of("node_state")[-1]["last_error"] == "IPMI timeout"
    assert h.loss()[(PUB, POWER)] == {"started": 1, "ended": 1, "errors": 1}


async def test_duplicate_start(h: Harness) -> None:
    n = str(uuid.uuid4())
    body = power("start", n, 0, to_power="power on")
    a = await h.put(body)
    await h.put(body)  # redelivered: same message_id
    b = await h.put(power("end", n, 3, power_state="power on"))
    assert h.of("operation") == [op(n, POWER, "success", a, b, to_power="power on", prev="available", new="available")]
    assert h.rt.metrics.duplicates == 1
    assert len(h.of("node_state")) == 2


async def test_duplicate_end(h: Harness) -> None:
    n = str(uuid.uuid4())
    a = await h.put(power("start", n, 0, to_power="power on"))
    body = power("end", n, 3, power_state="power on")
    b = await h.put(body)
    await h.put(body)
    await h.advance(10_000)
    assert h.of("operation") == [op(n, POWER, "success", a, b, to_power="power on", prev="available", new="available")]
    assert h.of("alert") == []
    assert h.rt.metrics.duplicates == 1


async def test_two_starts_then_one_end(h: Harness) -> None:
    n = str(uuid.uuid4())
    a1 = await h.put(power("start", n, 0, to_power="power on"))
    a2 = await h.put(power("start", n, 100, to_power="power off", power_state="power on"))
    b = await h.put(power("end", n, 104, power_state="power off"))
    assert h.of("operation") == [
        op(n, POWER, "superseded", a1, None, to_power="power on", prev="available"),
        op(n, POWER, "success", a2, b, to_power="power off", prev="available", new="available"),
    ]
    await h.advance(10_000)
    assert h.of("alert") == []
    assert h.loss()[(PUB, POWER)] == {"started": 2, "superseded": 1, "missing": 1, "ended": 1}


async def test_end_with_no_start(h: Harness) -> None:
    n = str(uuid.uuid4())
    b = await h.put(power("end", n, 0, power_state="power on"))
    await h.advance(100)  # within the 120 s grace: a start may still come
    assert h.of("alert") == []
    await h.advance(121)
    from pipeline.streams.operations import output_id
    from pipeline.wire import parse_timestamp

    assert h.of("alert") == [{
        "alert_id": output_id("orphan_end", n, POWER, b["message_id"]), "kind": "orphan_end",
        "resource_uuid": n, "node_uuid": n, "operation": POWER, "publisher_id": PUB,
        "raised_at": s.at(121), "started_at": None, "deadline_at": None,
        "ended_at": parse_timestamp(b["timestamp"]), "message_id": b["message_id"], "provision_state": None,
        "detail": f"success of {POWER} with no start", "resolution": None, "resolves": None,
    }]
    assert h.of("operation") == []
    await h.advance(10_000)
    assert len(h.of("alert")) == 1  # raised once
    assert h.loss()[(PUB, POWER)] == {"orphaned": 1}


def missing_alert(n: str, a: dict, raised_s: float) -> dict:
    from pipeline.streams.operations import output_id

    return {
        "alert_id": output_id("missing_end", n, POWER, a["message_id"]), "kind": "missing_end",
        "resource_uuid": n, "node_uuid": n, "operation": POWER, "publisher_id": PUB,
        "raised_at": s.at(raised_s), "started_at": s.at(0), "deadline_at": s.at(300), "ended_at": None,
        "message_id": a["message_id"], "provision_state": None, "detail": "no end within 300 s", "resolution": None, "resolves": None,
    }


async def test_start_with_no_end_past_the_deadline(h: Harness) -> None:
    n = str(uuid.uuid4())
    a = await h.put(power("start", n, 0, to_power="power on"))
    await h.advance(299)
    await h.advance(300)  # at the deadline is not past it
    assert h.of("alert") == []
    await h.advance(301)
    assert h.of("alert") == [missing_alert(n, a, 301)]
    await h.advance(5000)
    assert len(h.of("alert")) == 1
    assert h.of("operation") == []
    assert [o["operation"] for o in state_view.open_operations(n, h.rt.processor.resources[n.encode()])] == [POWER]
    assert h.loss()[(PUB, POWER)] == {"started": 1, "missing": 1}


async def test_late_end_after_the_alert(h: Harness) -> None:
    n = str(uuid.uuid4())
    a = await h.put(power("start", n, 0, to_power="power on"))
    await h.advance(400)
    b = await h.put(power("end", n, 450, power_state="power on"))
    from pipeline.streams.operations import output_id

    assert h.of("operation") == [op(n, POWER, "success", a, b, late=True, to_power="power on", prev="available",
                                    new="available")]
    assert h.of("alert") == [missing_alert(n, a, 400), {
        "alert_id": output_id("resolved_late", n, POWER, a["message_id"]), "kind": "resolved_late",
        "resource_uuid": n, "node_uuid": n, "operation": POWER, "publisher_id": PUB,
        "raised_at": s.at(450), "started_at": s.at(0), "deadline_at": s.at(300), "ended_at": s.at(450),
        "message_id": b["message_id"], "provision_state": None, "detail": "success 150000 ms after the deadline",
        "resolution": None, "resolves": None,
    }]
    assert h.loss()[(PUB, POWER)] == {"started": 1, "missing": 1, "ended": 1, "late": 1}
    assert state_view.open_operations(n, h.rt.processor.resources[n.encode()]) == []


async def test_provision_set_success_with_no_start(h: Harness) -> None:
    n = str(uuid.uuid4())
    await h.put(s.ironic_body(f"{PROVISION}.success", n, s.at(0), provision_state="clean wait",
                              previous_provision_state="cleaning", event="wait"))
    assert h.of("operation") == []
    await h.advance(10_000)
    assert h.of("alert")[0]["kind"] == "stuck_state"  # clean wait for 10 000 s > 1800 s
    assert [a["kind"] for a in h.of("alert")] == ["stuck_state"]
    (ns,) = h.of("node_state")[:1]
    assert (ns["provision_state"], ns["previous_provision_state"]) == ("clean wait", "cleaning")
    assert h.loss() == {}


async def test_provision_set_success_is_a_step_of_an_open_operation(h: Harness) -> None:
    n = str(uuid.uuid4())
    a = await h.put(s.ironic_body(f"{PROVISION}.start", n, s.at(0), provision_state="deleting",
                                  previous_provision_state="active", event="delete"))
    await h.put(s.ironic_body(f"{PROVISION}.success", n, s.at(30), provision_state="cleaning",
                              previous_provision_state="deleting", event="clean"))
    assert h.of("operation") == []
    b = await h.put(s.ironic_body(f"{PROVISION}.end", n, s.at(600), provision_state="available",
                                  previous_provision_state="cleaning", event="done"))
    assert h.of("operation") == [op(n, PROVISION, "success", a, b, prev="active", new="available", fsm="delete")]
    assert [r["provision_state"] for r in h.of("node_state")] == ["deleting", "cleaning", "available"]


async def test_glance_upload_success_and_failure(h: Harness) -> None:
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())
    a1 = await h.put(s.glance_body("image.prepare", ok, s.at(0)))
    b1 = await h.put(s.glance_body("image.upload", ok, s.at(42)))
    a2 = await h.put(s.glance_body("image.prepare", bad, s.at(1)))
    b2 = await h.put(s.glance_body("image.upload", bad, s.at(2), priority="ERROR",
                                   text=f"Image storage media is full: no space left for image {bad}"))
    assert h.of("operation") == [
        op(ok, "image.upload", "success", a1, b1, publisher=GLANCE),
        op(bad, "image.upload", "error", a2, b2, publisher=GLANCE),
    ]
    assert h.of("node_state") == []
    assert h.loss()[(GLANCE, "image.upload")] == {"started": 2, "ended": 2, "errors": 1}


async def test_task_success_and_failure(h: Harness) -> None:
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())
    a1 = await h.put(s.glance_body("task.run", ok, s.at(0)))
    await h.put(s.glance_body("task.processing", ok, s.at(5)))
    b1 = await h.put(s.glance_body("task.success", ok, s.at(90)))
    a2 = await h.put(s.glance_body("task.run", bad, s.at(0)))
    b2 = await h.put(s.glance_body("task.failure", bad, s.at(7)))
    assert h.of("operation") == [
        op(ok, "task", "success", a1, b1, publisher=GLANCE),
        op(bad, "task", "error", a2, b2, publisher=GLANCE),
    ]
    await h.advance(200_000)
    assert h.of("alert") == []


async def test_undecodable_record_goes_to_the_dead_letter_topic(h: Harness, monkeypatch) -> None:
    sent = []
    monkeypatch.setattr(h.rt.deadletter, "send_soon", lambda **kw: sent.append(kw))
    await h.put_record(b"x", b"not avro, not json")
    assert h.rt.metrics.undecodable == 1
    assert sent and sent[0]["value"] == b"not avro, not json"
    assert dict(sent[0]["headers"])["reason"].startswith(b"value is neither")
    assert h.sent == []


async def test_outputs_encode_with_their_schemas(h: Harness) -> None:
    from pipeline import codec

    n = str(uuid.uuid4())
    await h.put(power("start", n, 0, to_power="power on"))
    await h.advance(1000)
    await h.put(power("end", n, 1001, power_state="power on"))
    kinds = set()
    for out in h.sent:
        name, rec = codec.decode(codec.encode_value(out.kind, out.record))
        assert name == out.kind
        kinds.add(name)
    assert kinds == {"operation", "alert", "node_state"}


async def test_what_the_channel_holds_is_folded_as_one_batch(h: Harness) -> None:
    """faust_patches.event_batches: the records buffered when the agent reads are one batch (one
    turn of the loop for all of them), a record arriving alone is a batch of one; each is folded
    once, in order."""
    sizes: list[int] = []
    handle_batch = h.rt.processor.handle_batch

    def counted(records):
        sizes.append(len(records))
        handle_batch(records)

    h.rt.processor.handle_batch = counted
    nodes = [str(uuid.uuid4()) for _ in range(5)]
    for n in nodes:  # no await yields to the agent between these puts
        _, key, value, headers = s.relay(s.normalized(power("start", n, 0, to_power="power on")))
        await h.agent.put(key=key, value=value, partition=0, headers=headers, wait=False)
    await h.folded(5)
    await h.put(power("end", nodes[0], 3, power_state="power on"))
    assert sizes == [5, 1]
    assert [r["node_uuid"] for r in h.of("node_state")][:5] == nodes
    assert [r["operation"] for r in h.of("operation")] == [POWER]


# --- the bridges' heartbeats move a quiet lane (README, The clock) -------------------------------


async def heartbeat(h: Harness, bridge: str, sent_s: float, vouched_s: float | None = None) -> None:
    from pipeline import codec, events

    event = events.heartbeat_event(bridge=bridge, topic="notifications.baremetal.node", partition=0,
                                   vouched=s.at(sent_s if vouched_s is None else vouched_s), sent_at=s.at(sent_s),
                                   interval_s=5.0, caught_up=vouched_s is None, message_id=str(uuid.uuid4()))
    await h.put_record(None, codec.encode_event(event), [("kind", events.HEARTBEAT_KIND)])


async def test_heartbeats_flag_a_lost_end_where_no_event_follows(h: Harness) -> None:
    n = str(uuid.uuid4())
    await h.put(power("start", n, 0, to_power="power on"))
    for t in range(5, 300, 5):  # the warm-up (3 intervals), then up to the deadline (300 s)
        await heartbeat(h, "b-1", t)
    assert h.of("alert") == []  # 295 s: not yet due
    await heartbeat(h, "b-1", 301)
    assert [a["kind"] for a in h.of("alert")] == ["missing_end"]
    assert h.rt.metrics.heartbeats == 60 and h.rt.metrics.processed == 1  # no state of their own


async def test_a_replica_that_holds_its_time_holds_the_lane(h: Harness) -> None:
    n = str(uuid.uuid4())
    await h.put(power("start", n, 0, to_power="power on"))
    for t in range(5, 400, 5):
        await heartbeat(h, "b-1", t)
        await heartbeat(h, "b-2", t, vouched_s=1)  # alive, not caught up since t=1
    assert h.of("alert") == []
    for t in range(400, 420, 5):  # b-2 is gone: after 3 of its intervals it no longer holds the lane
        await heartbeat(h, "b-1", t)
    assert [a["kind"] for a in h.of("alert")] == ["missing_end"]


async def test_a_heartbeat_the_bridge_did_not_write_is_dead_lettered(h: Harness) -> None:
    from pipeline import codec, events

    event = events.heartbeat_event(bridge="b", topic="t", partition=0, vouched=s.at(0), sent_at=s.at(0),
                                   interval_s=5.0, caught_up=True, message_id="m")
    event["payload"] = {"bridge": "b"}
    await h.put_record(None, codec.encode_event(event))
    assert h.rt.metrics.undecodable == 1 and h.rt.metrics.heartbeats == 0
