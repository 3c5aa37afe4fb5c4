"""Reading the stream agents' tables for the views: active partitions only, records decoded once per
change, loss summed per publisher. Records are made by the agents' own state machine."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
from faust.types import TP

from pipeline import events
from pipeline.streams import operations, state
from pipeline.streams.models import Settings, micros
from pipeline.web import source
from tests.support.web_traffic import node_body, utc


class Table(dict):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"app-{name}-changelog")


def fold(table: Table, node: str, partition: int, *bodies: bytes) -> None:
    st = None
    for body in bodies:
        event = events.normalize(body, topic_prefix="t.")
        st = operations.on_event(st, event, micros(event["timestamp"]), Settings(), partition).state
    table[node.encode()] = orjson.dumps(st)


def runtime(active: set[int]) -> SimpleNamespace:
    app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: {
        TP(t, p) for p in active for t in ("app-resources-changelog", "app-loss-changelog")}))
    return SimpleNamespace(app=app, resources=Table("resources"), loss=Table("loss"),
                           topic_names=SimpleNamespace(sources=("t.baremetal.node",)))


A = "0a000000-0000-4000-8000-000000000001"
B = "0b000000-0000-4000-8000-000000000002"


def test_only_active_partitions_and_rescans_follow_changes() -> None:
    rt = runtime({0})
    fold(rt.resources, A, 0, node_body(A, "power_set", "end", utc(50), power="power on", provision="active"))
    # a standby copy of another worker's partition (memory:// keeps those in the same dict)
    fold(rt.resources, B, 1, node_body(B, "power_set", "end", utc(50), power="power off", provision="available"))
    web = source.source_from_runtime(rt, scan_cache_s=0.0)
    asyncio.run(web.refresh())
    assert web.nodes() == [{"uuid": A, "power_state": "power on", "provision_state": "active", "maintenance": False, "stuck": False}]
    assert web.expand(web.nodes()[0])["provision_changed_event"] == "baremetal.node.power_set.end"
    assert web.node(A)["open_operations"] == []

    fold(rt.resources, A, 0,
         node_body(A, "power_set", "end", utc(50), power="power on", provision="active"),
         node_body(A, "provision_set", "start", utc(40), power="power on", provision="active", event="deleted"))
    asyncio.run(web.refresh())
    (op,) = web.open_operations()
    assert (op["resource_uuid"], op["operation"]) == (A, "baremetal.node.provision_set")
    assert op["started_at"].endswith("Z")
    assert [o["operation"] for o in web.node(A)["open_operations"]] == ["baremetal.node.provision_set"]
    assert web.node(B) is not None  # a key lookup is routed to its owner first; the view answers what it holds
    assert web.node("0c000000-0000-4000-8000-000000000003") is None


def test_an_unchanged_record_is_not_decoded_again() -> None:
    rt = runtime({0})
    fold(rt.resources, A, 0, node_body(A, "power_set", "end", utc(50), power="power on", provision="active"))
    index = source.TableIndex(rt.app, rt.resources, ttl_s=0.0)

    def scan() -> source._Entry:
        asyncio.run(index.refresh())
        return index.active[0]

    first = scan()
    assert scan() is first
    fold(rt.resources, A, 0, node_body(A, "power_set", "end", utc(40), power="power off", provision="active"))
    assert scan() is not first and index.nodes()[0]["power_state"] == "power off"


def test_loss_per_publisher_from_active_partitions() -> None:
    rt = runtime({0, 2})
    for partition, publisher, counts in ((0, "c1", {"started": 3, "missing": 1}), (2, "c1", {"started": 1}),
                                         (1, "c1", {"started": 100}), (0, "c2", {"started": 2, "ended": 2})):
        rt.loss[state.loss_key(partition, publisher, "baremetal.node.deploy")] = orjson.dumps(counts)
    web = source.source_from_runtime(rt)
    assert web.loss() == {"c1": {"started": 4, "missing": 1}, "c2": {"started": 2, "ended": 2}}


def test_a_node_is_stuck_while_it_stays_in_the_state_its_stuck_alert_was_for() -> None:
    rt = runtime({0})
    event = events.normalize(node_body(A, "provision_set", "success", utc(50), power="power on",
                                       provision="deploying"), topic_prefix="t.")
    res = operations.on_event(None, event, micros(event["timestamp"]), Settings(), 0)
    rt.resources[A.encode()] = orjson.dumps(res.state)
    web = source.source_from_runtime(rt, scan_cache_s=0.0)
    asyncio.run(web.refresh())
    assert web.nodes()[0]["stuck"] is False
    (expiry,) = [e for e in res.expiries if e.kind == "stuck"]
    stuck = operations.on_expiry(res.state, A, expiry, expiry.due + 1, Settings())
    assert [o.record["kind"] for o in stuck.outputs] == ["stuck_state"]
    rt.resources[A.encode()] = orjson.dumps(stuck.state)
    asyncio.run(web.refresh())
    assert web.nodes()[0]["stuck"] is True


def test_newest_event_per_topic_reads_the_watchdog_of_the_owned_lanes() -> None:
    rt = runtime({0})
    rt.app.assignor.assigned_actives = lambda: {TP("t.baremetal.node", 0)}
    rt.processor = SimpleNamespace(watchdog=SimpleNamespace(newest={("t.baremetal.node", 0): 50_000_000,
                                                                     ("t.baremetal.node", 1): 90_000_000}))
    assert source.source_from_runtime(rt).newest_events() == {"t.baremetal.node": 50.0}
