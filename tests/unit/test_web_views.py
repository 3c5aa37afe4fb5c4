"""The views on a real faust app and aiohttp server, without brokers: validation, JSON errors,
read-only methods, key routing and the fleet fan-out between two apps that point at each other."""

from __future__ import annotations

from typing import Any

import faust
import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from pipeline.web import Observations, WebSource, register
from tests.support.ports import free_port

CHANGELOG = "web-unit-state-changelog"
PARTITIONS = 6


def node(uuid: str, power: str = "power on", provision: str = "active", maintenance: bool = False) -> dict:
    return {"uuid": uuid, "power_state": power, "provision_state": provision, "maintenance": maintenance}


class Worker:
    """One faust app with the views mounted over in-memory node states."""

    def __init__(self, nodes: dict[str, dict], port: int) -> None:
        self.port = port
        self.app = faust.App("web-unit", broker="kafka://127.0.0.1:1", store="memory://",
                             web_host="127.0.0.1", web_port=port)
        table = self.app.Table("state", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
        self.observations = Observations(window_s=600, slice_s=60)
        self.nodes = nodes
        source = WebSource(
            table=table,
            node=lambda u: dict(self.nodes[u], open_operations=[]) if u in self.nodes else None,
            nodes=lambda: list(self.nodes.values()),
            open_operations=lambda: [{"resource_uuid": u, "operation": "baremetal.node.deploy",
                                      "started_at": "2026-11-22T01:00:00Z"} for u in self.nodes],
            loss=lambda: {"ironic-conductor.c1": {"started": len(self.nodes), "missing": 1}},
            agent=lambda: self.agent,
        )
        self.agent: dict = {}  # what streams.liveness.Progress.report would say
        self.views = register(self.app, source, self.observations)
        self.distribution: dict[str, dict[str, list[int]]] = {}
        self.views.peers.distribution = lambda: self.distribution  # what the assignment would say
        self.app.web.init_server()
        self.server = TestServer(self.app.web.web_app, host="127.0.0.1", port=port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def partition_of(uuid: str) -> int:
    key = uuid.encode()
    return DefaultPartitioner()(key, list(range(PARTITIONS)), list(range(PARTITIONS)))


UUIDS = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(1, 41)]


@pytest.fixture
async def pair() -> Any:
    """Two workers splitting six partitions 0-2 / 3-5, each holding the nodes of its partitions."""
    ports = free_port(), free_port()
    owned = ({0, 1, 2}, {3, 4, 5})
    workers = [
        Worker({u: node(u, "power on" if i % 3 else "power off", maintenance=i % 5 == 0)
                for i, u in enumerate(UUIDS) if partition_of(u) in parts}, port)
        for parts, port in zip(owned, ports)
    ]
    distribution = {w.url: {CHANGELOG: sorted(parts)} for w, parts in zip(workers, owned)}
    for w in workers:
        w.distribution = distribution
        await w.server.start_server()
    async with ClientSession() as session:
        yield workers, session
    for w in workers:
        await w.server.close()


def test_the_route_hashes_like_faust_and_the_bridge() -> None:
    """murmur2 of the UUID's UTF-8 bytes, the Java client's default partitioner (the bridge's)."""
    w = Worker({}, free_port())
    w.distribution = {"http://a:1": {CHANGELOG: [0, 1, 2]}, "http://b:2": {CHANGELOG: [3, 4, 5]}}
    for uuid in UUIDS:
        owner = w.views.peers.owner(CHANGELOG, uuid.encode())
        assert owner == ("http://a:1" if partition_of(uuid) < 3 else "http://b:2")
    # faust's router serializes the key with the table's changelog key serializer: raw bytes here
    table = w.app.tables["state"]
    assert table.changelog_topic.prepare_key(UUIDS[0].encode(), None)[0] == UUIDS[0].encode()


async def test_every_node_answers_from_either_worker(pair: Any) -> None:
    workers, session = pair
    for uuid in UUIDS:
        for w in workers:
            async with session.get(f"{w.url}/api/nodes/{uuid.upper()}") as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            assert body["uuid"] == uuid
            owner = next(x for x in workers if uuid in x.nodes)
            assert r.headers["X-Pipeline-Answered-By"].rstrip("/") == owner.url


async def test_fleet_view_merges_both_workers(pair: Any) -> None:
    workers, session = pair
    everything = {u: n for w in workers for u, n in w.nodes.items()}
    assert all(w.nodes for w in workers)
    for w in workers:
        async with session.get(f"{w.url}/api/nodes?power_state=power+off&limit=1000") as r:
            body = await r.json()
        expected = sorted(u for u, n in everything.items() if n["power_state"] == "power off")
        assert [n["uuid"] for n in body["nodes"]] == expected
        assert body["workers"] == 2 and body["partial"] is False
        async with session.get(f"{w.url}/api/nodes?maintenance=true&limit=3") as r:
            body = await r.json()
        expected = sorted(u for u, n in everything.items() if n["maintenance"])
        assert body["matched"] == len(expected) and [n["uuid"] for n in body["nodes"]] == expected[:3]
        async with session.get(f"{w.url}/api/summary") as r:
            summary = await r.json()
        assert summary["nodes"]["total"] == len(UUIDS)
        assert summary["loss"]["ironic-conductor.c1"] == {"started": len(UUIDS), "missing": 2, "rate": 2 / len(UUIDS)}
        async with session.get(f"{w.url}/api/operations/open?limit=5") as r:
            body = await r.json()
        assert body["total"] == len(UUIDS) and body["count"] == 5


async def test_stats_merge_the_sketches_of_both_workers(pair: Any) -> None:
    workers, session = pair
    for i in range(100):
        workers[i % 2].observations.operation({"operation": "baremetal.node.power_set", "outcome": "error" if i < 10 else "success",
                                               "duration_ms": (i + 1) * 100, "ended_at": "2026-11-22T01:00:00Z"})
    async with session.get(f"{workers[0].url}/api/operations/stats") as r:
        body = await r.json()
    row = body["operations"]["baremetal.node.power_set"]
    assert (row["count"], row["errors"], row["max_ms"]) == (100, 10, 10000.0)
    assert abs(row["p50_ms"] - 5000) <= 0.011 * 5000 + 100
    assert abs(row["p99_ms"] - 9900) <= 0.011 * 9900 + 100


async def test_alerts_filter_by_type(pair: Any) -> None:
    workers, session = pair
    workers[0].observations.alert({"alert_id": "a1", "kind": "missing_end", "resource_uuid": UUIDS[0], "raised_at": "2026-11-22T01:00:00Z"})
    workers[1].observations.alert({"alert_id": "a2", "kind": "orphan_end", "resource_uuid": UUIDS[1], "raised_at": "2026-11-22T01:00:01Z"})
    async with session.get(f"{workers[1].url}/api/alerts") as r:
        assert [a["alert_id"] for a in (await r.json())["alerts"]] == ["a2", "a1"]
    async with session.get(f"{workers[1].url}/api/alerts?type=missing_end") as r:
        assert [a["alert_id"] for a in (await r.json())["alerts"]] == ["a1"]


async def test_unreachable_peer_gives_a_partial_answer(pair: Any) -> None:
    workers, session = pair
    await workers[1].server.close()
    async with session.get(f"{workers[0].url}/api/nodes") as r:
        body = await r.json()
    assert r.status == 200 and body["partial"] is True and body["unreachable"] == [workers[1].url]
    assert {n["uuid"] for n in body["nodes"]} == set(workers[0].nodes)


async def test_an_unreachable_owner_is_a_503_with_its_name(pair: Any) -> None:
    workers, session = pair
    await workers[1].server.close()
    node = next(iter(workers[1].nodes))
    async with session.get(f"{workers[0].url}/api/nodes/{node}") as r:
        body = await r.json()
    assert r.status == 503 and f"({workers[1].url}) did not answer" in body["error"]


BAD = [
    ("GET", "/api/nodes/not-a-uuid", 400, "not a UUID"),
    ("GET", "/api/nodes/..%2F..%2Fetc%2Fpasswd", 400, "not a UUID"),
    ("GET", "/api/nodes/" + "a" * 3000, 400, "not a UUID"),
    ("GET", "/api/nodes?power_state=on", 400, "unknown power_state"),
    ("GET", "/api/nodes?provision_state=flying", 400, "unknown provision_state"),
    ("GET", "/api/nodes?maintenance=perhaps", 400, "maintenance must be true or false"),
    ("GET", "/api/nodes?limit=100000", 400, "limit must be an integer from 1 to 1000"),
    ("GET", "/api/nodes?limit=" + "9" * 7000, 400, "query string is"),
    ("GET", "/api/nodes?power_state=" + "x" * 30000, 400, "query string is"),
    ("GET", "/api/nodes/" + "f" * 20000, 400, "not a UUID"),
    ("GET", "/api/alerts?type=fire", 400, "unknown alert type"),
    ("GET", "/api/operations/stats?x=1", 400, "unknown parameter"),
    ("GET", "/api/nodes/00000000-0000-4000-8000-00000000ffff", 404, "unknown node"),
    ("GET", "/../../etc/passwd", 404, "no such path"),
    ("GET", "/table", 404, "no such path"),
    ("GET", "/router", 404, "no such path"),
    ("POST", "/api/nodes", 405, "not allowed"),
    ("PUT", f"/api/nodes/{UUIDS[0]}", 405, "not allowed"),
    ("DELETE", "/api/alerts", 405, "not allowed"),
    ("PATCH", "/", 405, "not allowed"),
]


@pytest.mark.parametrize("method, path, status, words", BAD)
async def test_bad_requests_get_json_reasons(pair: Any, method: str, path: str, status: int, words: str) -> None:
    workers, session = pair
    async with session.request(method, workers[0].url + path) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        body = orjson.loads(await r.read())
    assert words in body["error"] and "Traceback" not in body["error"]


async def test_head_health_metrics_and_dashboard(pair: Any) -> None:
    workers, session = pair
    w = workers[0]
    w.observations.event("baremetal.node.power_set.start")
    w.observations.operation({"operation": "task", "outcome": "success", "duration_ms": 5, "ended_at": "2026-11-22T01:00:00Z"})
    w.observations.alert({"alert_id": "x", "kind": "stuck_state", "raised_at": "2026-11-22T01:00:00Z"})
    async with session.head(f"{w.url}/healthz") as r:
        assert r.status == 200 and await r.read() == b""
    async with session.get(f"{w.url}/readyz") as r:
        assert r.status == 503 and (await r.json())["reason"] == "no partitions assigned"
    async with session.get(f"{w.url}/metrics") as r:
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {"pipeline_events", "pipeline_operations", "pipeline_alerts", "pipeline_open_operations",
            "pipeline_consumer_lag", "faust_messages_received"} <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("pipeline_events_total", (("event_type", "baremetal.node.power_set.start"),))] == 1
    assert samples[("pipeline_operations_total", (("operation", "task"), ("outcome", "success")))] == 1
    assert samples[("pipeline_alerts_total", (("type", "stuck_state"),))] == 1
    assert samples[("pipeline_open_operations", (("operation", "baremetal.node.deploy"),))] == len(w.nodes)
    async with session.get(f"{w.url}/") as r:
        page = await r.text()
        assert r.status == 200 and r.content_type == "text/html"
    assert "<script" in page and "http://" not in page and "https://" not in page


async def test_healthz_fails_while_the_agent_is_stalled(pair: Any) -> None:
    (w, _), session = pair
    w.agent = {"stalled": False, "reason": "", "last_progress": 1_700_000_000.0, "waiting": 0}
    async with session.get(f"{w.url}/healthz") as r:
        assert r.status == 200
    w.agent = {"stalled": True, "reason": "the agent has held a batch for 121 s", "last_progress": 1_700_000_000.0}
    async with session.get(f"{w.url}/healthz") as r:
        assert r.status == 503 and await r.json() == {"status": "stalled", "reason": "the agent has held a batch for 121 s"}
    async with session.get(f"{w.url}/metrics") as r:
        text = await r.text()
    assert "pipeline_agent_stalled 1.0" in text
    assert "pipeline_agent_last_progress_timestamp_seconds 1.7e+09" in text
