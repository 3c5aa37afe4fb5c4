"""Two `pipeline worker` processes in one consumer group on the real Kafka: every node's state is
answered by either worker (routed to the key's owner), and the fleet view merges both."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.support.eventually import eventually
from tests.support.ports import free_port
from tests.support.web_traffic import Fleet, WorkerProcess, get, node_body, produce, utc

pytestmark = pytest.mark.integration

POWER = ("power on", "power off")
PROVISION = ("active", "available", "manageable", "deploy failed")


@pytest.fixture
def workers(tmp_path: Path, unique: str):
    prefix = f"webit{unique}."
    pair = [WorkerProcess(tmp_path, f"webit-{unique}", prefix, free_port(), name=f"w{i}") for i in range(2)]
    for w in pair:
        w.start()
    yield prefix, pair
    for w in pair:
        w.stop()


def wait_for(check, timeout: float, what: str, workers: list[WorkerProcess]) -> None:
    eventually(check, timeout, what, interval=0.5, ignore=(OSError,),
               detail=lambda: "\n".join(w.log_tail(15) for w in workers))


def test_every_node_from_either_worker(workers) -> None:
    prefix, pair = workers
    for w in pair:
        w.wait_ready()
    # both members in the assignment, as each of them sees it
    wait_for(lambda: all(get(w.url + "/api/nodes?limit=1")[1].get("workers") == 2 for w in pair)
             and all(get(w.url + "/readyz")[0] == 200 for w in pair), 60, "two members", pair)

    rng = random.Random(6)
    fleet = Fleet(prefix)
    expected: dict[str, dict] = {}
    open_ops: dict[str, str] = {}
    for i in range(200):
        node = f"{rng.getrandbits(128):032x}"
        node = f"{node[:8]}-{node[8:12]}-4{node[13:16]}-8{node[17:20]}-{node[20:32]}"
        power, provision, maintenance = rng.choice(POWER), rng.choice(PROVISION), i % 7 == 0
        start = utc(600 - i)
        before = "power off" if power == "power on" else "power on"
        fleet.add(node_body(node, "power_set", "start", start, power=before, provision=provision,
                            maintenance=maintenance, to_power=power))
        fleet.add(node_body(node, "power_set", "end", start.replace(microsecond=0) + (utc() - utc(5 + i % 30)),
                            power=power, provision=provision, maintenance=maintenance, to_power=power))
        if i % 10 == 0:
            fleet.add(node_body(node, "provision_set", "start", utc(60), power=power, provision=provision,
                                maintenance=maintenance, event="deploy"))
            open_ops[node] = "baremetal.node.provision_set"
        expected[node] = {"power_state": power, "provision_state": provision, "maintenance": maintenance}
    asyncio.run(produce(fleet.records))

    wait_for(lambda: all(get(w.url + "/api/summary")[1]["nodes"]["total"] == 200 for w in pair), 60,
             "200 nodes in the fleet view", pair)

    answered_by: set[str] = set()
    for node, state in expected.items():
        for w in pair:
            status, body, headers = get(f"{w.url}/api/nodes/{node.upper() if len(answered_by) % 2 else node}")
            assert status == 200, (w.url, node, status, body)
            assert body["uuid"] == node
            got = {k: body[k] for k in state}
            assert got == state, (w.url, node, got, state)
            ops = [o["operation"] for o in body["open_operations"]]
            assert ops == ([open_ops[node]] if node in open_ops else []), (node, body["open_operations"])
            answered_by.add(headers["X-Pipeline-Answered-By"].rstrip("/"))
    assert answered_by == {w.url for w in pair}, answered_by  # both workers own part of the fleet

    for w in pair:
        status, body, _ = get(f"{w.url}/api/nodes?power_state=power+off&maintenance=false&limit=1000")
        assert status == 200 and body["workers"] == 2 and not body["partial"]
        want = sorted(n for n, s in expected.items() if s["power_state"] == "power off" and not s["maintenance"])
        assert [n["uuid"] for n in body["nodes"]] == want
        status, body, _ = get(f"{w.url}/api/nodes?provision_state=active&limit=7")
        assert body["count"] == 7 and body["matched"] == sum(s["provision_state"] == "active" for s in expected.values())
        status, body, _ = get(f"{w.url}/api/operations/open?limit=1000")
        assert sorted(o["resource_uuid"] for o in body["operations"]) == sorted(open_ops)
        status, body, _ = get(f"{w.url}/api/operations/stats")
        row = body["operations"]["baremetal.node.power_set"]
        assert row["count"] == 200 and row["errors"] == 0 and body["workers"] == 2

    unknown = "00000000-0000-4000-8000-000000000000"
    for w in pair:
        status, body, _ = get(f"{w.url}/api/nodes/{unknown}")
        assert status == 404 and body["error"] == f"unknown node {unknown}"
        status, body, _ = get(f"{w.url}/api/nodes/not-a-uuid")
        assert status == 400 and "not a UUID" in body["error"]
        status, body, _ = get(f"{w.url}/api/nodes?limit=100000")
        assert status == 400 and "limit" in body["error"]
        status, body, _ = get(f"{w.url}/api/nodes?power_state=sideways")
        assert status == 400 and "unknown power_state" in body["error"]
