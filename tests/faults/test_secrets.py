"""The secrets corpus (corpus/secrets.json) through oslo.messaging's Notifier, the bridge and a worker
with its web views: no credential value may appear in any Kafka topic the run wrote (relay,
dead-letter, derived outputs, faust's changelogs and internal topics), in a log line of the bridge or
the worker, or in a web response (every view, both /metrics)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import aio_pika
import pytest

from tests.support.faults import Pipeline, caught_up, read_topics, topics_starting
from tests.support.oslo_rabbit import OsloPublisher
from tests.support.ports import free_port

from .conftest import FIGURES

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CORPUS = json.loads((Path(__file__).parent / "corpus" / "secrets.json").read_text())
MARK = "S3cr3t-"


def secrets_in(value) -> set[str]:
    if isinstance(value, str):
        return {value[value.index(MARK):].split("@")[0].split("-----")[0]} if MARK in value else set()
    if isinstance(value, dict):
        return set().union(*map(secrets_in, value.values()), set())
    if isinstance(value, list):
        return set().union(*map(secrets_in, value), set())
    return set()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def seen(broker, tmp_path_factory) -> dict:
    """Everything the run exposed, by where: Kafka records per topic, logs, web answers."""
    return asyncio.run(_run(broker, tmp_path_factory.mktemp("secrets")))


async def _run(broker, data_dir: Path) -> dict:
    web_port, metrics_port = free_port(), free_port()
    p = Pipeline(broker, data_dir, bridge_extra=(
        "--amqp-binding", "ironic:ironic_versioned_notifications.*", "--amqp-binding", "glance:notifications.*",
        "--metrics-port", str(metrics_port)))
    try:
        bridge = p.bridge()
        await bridge.wait_for("relaying from", 60)
        worker = p.worker(web_port=web_port)
        await worker.wait_for("Ready", 90)
        rabbit = broker.amqp_url.replace("amqp://", "rabbit://")
        publishers = {s: OsloPublisher(s, url=rabbit) for s in ("ironic", "glance")}
        try:
            for n in CORPUS["notifications"]:
                getattr(publishers[n["service"]].notifier, n["priority"])(n["context"], n["event_type"], n["payload"])
        finally:
            for pub in publishers.values():
                pub.close()
        connection = await aio_pika.connect(broker.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("ironic", ensure=False)
            for r in CORPUS["rejected"]:
                await exchange.publish(aio_pika.Message(json.dumps(r["body"]).encode()),
                                       routing_key="ironic_versioned_notifications.info")
        deadline = time.monotonic() + 60
        wanted = len(CORPUS["notifications"]) + len(CORPUS["rejected"])
        while True:
            relay = await read_topics(broker.kafka, await topics_starting(broker.kafka, p.names.topic_prefix))
            if sum(map(len, relay.values())) >= wanted or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        await caught_up(p, timeout=60, quiet_s=3)
        base = f"http://127.0.0.1:{web_port}"
        paths = ["/", "/healthz", "/readyz", "/metrics", "/api/nodes", "/api/nodes?maintenance=true",
                 "/api/operations/open", "/api/operations/stats", "/api/alerts", "/api/summary",
                 *(f"/api/nodes/{u}" for u in CORPUS["nodes"])]
        web = {path: await asyncio.to_thread(http_get, base + path) for path in paths}
        web["bridge /metrics"] = await asyncio.to_thread(http_get, f"http://127.0.0.1:{metrics_port}/metrics")
        abuse = await asyncio.to_thread(abuse_web, web_port)
        abuse_after = {"healthz": await asyncio.to_thread(http_get, base + "/healthz"), "worker alive": worker.alive()}
        topics = await topics_starting(broker.kafka, p.names.topic_prefix, p.names.output_prefix, p.names.app_id)
        records = await read_topics(broker.kafka, topics)
        await p.stop()
        kafka = {}
        for topic, recs in records.items():
            kafka[topic] = b"\n".join((r.key or b"") + b"\t" + (r.value or b"") + b"\t" +
                                      b"\t".join(v for _, v in r.headers or ()) for r in recs)
        return {"kafka": kafka, "relay": relay, "logs": {proc.name + str(proc.pid): proc.text() for proc in p.procs},
                "web": web, "names": p.names, "abuse": abuse, "abuse_after": abuse_after}
    finally:
        await p.stop()
        await p.cleanup()


TRAVERSALS = [
    "/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/api/nodes/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/nodes/../../../../etc/passwd", "/static/../../../../etc/passwd", "/static/dashboard.html/../../views.py",
    "//etc/passwd", "/api/nodes/%00", "/..%5c..%5c..%5cetc%5cpasswd", "/api/../../pyproject.toml",
    "/static/%2e%2e/%2e%2e/pyproject.toml", "/dashboard.html", "/api/nodes/%252e%252e%252fetc%252fpasswd",
    "/table", "/router", "/api/nodes/" + "a" * 5000,
]
HUGE_QUERIES = [("limit", 10_000), ("power_state", 60_000), ("x", 100_000), ("provision_state", 1_000_000)]
METHODS = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"]
LEAK_SIGNS = ("root:x:0:0", "[build-system]", "import aiohttp", "def register(")


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str, str]:
    """(status, content type, body) via http.client, which sends the path exactly as given."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode(errors="replace")
    except (ConnectionError, http.client.HTTPException) as exc:  # the server hung up: no answer at all
        return 0, "", f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def abuse_web(port: int) -> list[dict]:
    out = []
    for path in TRAVERSALS:
        out.append({"what": "traversal", "request": f"GET {path[:80]}", "answer": _request(port, "GET", path)})
    for name, size in HUGE_QUERIES:
        path = f"/api/nodes?{name}={'A' * size}"
        out.append({"what": "huge query", "size": size, "request": f"GET /api/nodes?{name}=<{size} bytes>",
                    "answer": _request(port, "GET", path)})
    for method in METHODS:
        for path in ("/", "/api/nodes", f"/api/nodes/{CORPUS['nodes'][0]}", "/metrics"):
            out.append({"what": "method", "request": f"{method} {path}",
                        "answer": _request(port, method, path, b'{"a": 1}' if method in ("POST", "PUT", "PATCH") else None)})
    return out


def _leaks(seen: dict, secrets: set[str], skip_deadletter: bool = False) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for topic, blob in seen["kafka"].items():
        if skip_deadletter and topic.endswith("deadletter"):
            continue
        hits = sorted(s for s in secrets if s.encode() in blob)
        if hits:
            found[f"kafka {topic}"] = hits
    for name, text in seen["logs"].items():
        if hits := sorted(s for s in secrets if s in text):
            found[f"log {name}"] = hits
    for path, (_, body) in seen["web"].items():
        if hits := sorted(s for s in secrets if s in body):
            found[f"web {path}"] = hits
    return found


def test_no_credential_leaves_the_bridge(seen) -> None:
    secrets = secrets_in(CORPUS["notifications"])
    assert len(secrets) >= 40, sorted(secrets)
    relayed = sum(len(v) for t, v in seen["relay"].items() if not t.endswith("deadletter"))
    assert relayed == len(CORPUS["notifications"]), f"{relayed} relayed"
    answered = {path: status for path, (status, _) in seen["web"].items()}
    assert all(status == 200 for status in answered.values()), answered
    # the views did show what the corpus is about: the node, its operation, the masks
    node = json.loads(seen["web"][f"/api/nodes/{CORPUS['nodes'][0]}"][1])
    assert "4b1f0c3e" in json.dumps(node)
    kafka_bytes = sum(len(b) for b in seen["kafka"].values())
    leaks = _leaks(seen, secrets)
    FIGURES.append(f"secrets: {len(secrets)} credential values in {len(CORPUS['notifications'])} notifications; "
                   f"searched {len(seen['kafka'])} topics holding records ({kafka_bytes} bytes), {len(seen['logs'])} logs, "
                   f"{len(seen['web'])} web answers: {sum(map(len, leaks.values()))} found")
    assert not leaks, f"credential values found: {leaks}"


def test_rejected_message_credentials_stay_out_of_kafka(seen) -> None:
    """A body the bridge cannot decode is dead-lettered as received: its credentials too?"""
    secrets = secrets_in(CORPUS["rejected"])
    dead = sum(len(v) for t, v in seen["relay"].items() if t.endswith("deadletter"))
    assert dead == len(CORPUS["rejected"]), f"{dead} dead-lettered"
    leaks = _leaks(seen, secrets)
    FIGURES.append(f"secrets in rejected bodies: {len(secrets)} values; found in {sorted(leaks)}")
    assert not leaks, f"credential values of rejected messages found: {leaks}"


def test_web_views_refuse_traversal_huge_queries_and_other_methods(seen) -> None:
    """Every abusive request gets a 4xx (a JSON reason up to the 64 KiB request line the views
    accept; aiohttp's own plain 400 beyond), no file content, and the worker keeps serving."""
    problems = []
    for probe in seen["abuse"]:
        status, ctype, body = probe["answer"]
        request = probe["request"]
        if any(sign in body for sign in LEAK_SIGNS):
            problems.append(f"{request}: file content in the answer")
        if probe["what"] == "traversal" and request in ("GET /dashboard.html",):
            continue  # a page of ours, whatever it answers, it is no file outside
        if not 400 <= status < 500:
            problems.append(f"{request}: status {status}")
        elif probe.get("size", 0) <= 60_000 and not request.startswith("FOO ") and "json" not in ctype:
            # aiohttp's HTTP parser answers an over-long request line and a method it does not know
            # (FOO) with its own plain-text 400 before any middleware runs: 4xx, not JSON
            problems.append(f"{request}: {status} but {ctype!r}, not JSON: {body[:80]!r}")
    after = seen["abuse_after"]
    assert after["worker alive"] and after["healthz"][0] == 200, after
    statuses = {}
    for probe in seen["abuse"]:
        statuses.setdefault(probe["what"], {}).setdefault(probe["answer"][0], 0)
        statuses[probe["what"]][probe["answer"][0]] += 1
    FIGURES.append(f"web abuse: {len(seen['abuse'])} requests, statuses by kind {statuses}; worker alive after")
    assert not problems, "\n".join(problems)
