"""The reconciler against a real Ironic (39, from PyPI; tests/support/ironic.py): Ironic publishes its own
notifications through oslo.messaging into RabbitMQ, a relay on the broker loses chosen ends on their way
to the bridge, the worker raises missing_end for each; `pipeline reconcile` asks Ironic's API and the
operations close reconciled, and the node states end equal to what Ironic's API says.

Faults on the way: Ironic is down when the reconciler starts (nothing is written or closed while it is;
the reconciler retries), and two reconcilers answer the same alerts at once (the same observation ids:
no operation twice)."""
from __future__ import annotations

import asyncio
import collections
import re
import time
from pathlib import Path

import pytest

from pipeline import codec
from tests.support import ironic as ir
from tests.support.bridge import delete_queues, delete_topics
from tests.support.eventually import eventually
from tests.support.faults import derived, header, read_topics
from tests.support.oslo_rabbit import wait_for_queue
from tests.support.processes import spawn, stop

KAFKA = "127.0.0.1:9092"
POWER, PROVISION = "baremetal.node.power_set", "baremetal.node.provision_set"
COMPARED = ("power_state", "target_power_state", "provision_state", "target_provision_state", "maintenance")


class Losses:
    """Which ends the relay loses: the last of its operation on its node, so that no newer start
    supersedes the open operation before its deadline (that is a loss the worker reports itself).
    Node A goes the whole way (manage, provide, deploy, power off, power on, undeploy) and loses its
    power-on end and its undeploy's end (its second provision end to `available`, the first being
    `provide`'s); node B stops after deploy and power off, and loses both their ends. Every
    notification of node C is lost: only the sweep can find it."""

    def __init__(self) -> None:
        self.a = self.b = self.c = ""
        self.available: collections.Counter = collections.Counter()

    def __call__(self, event_type: str, data: dict) -> bool:
        node, state, power = data.get("uuid"), data.get("provision_state"), data.get("power_state")
        if data.get("name") == "node-c":  # by name: its create notifications come before enroll() returns
            return True
        if event_type == f"{PROVISION}.end" and state == "available":
            self.available[node] += 1
        if node == self.a:
            return (event_type == f"{POWER}.end" and power == "power on") or \
                (event_type == f"{PROVISION}.end" and state == "available" and self.available[node] == 2)
        if node == self.b:
            return (event_type == f"{PROVISION}.end" and state == "active") or \
                (event_type == f"{POWER}.end" and power == "power off")
        return False


def lifecycle(ironic: ir.Ironic, node: str, whole: bool) -> None:
    ironic.provision(node, "manage", "manageable")
    ironic.provision(node, "provide", "available")
    ironic.provision(node, "active", "active")
    ironic.power(node, "power off")
    if whole:
        ironic.power(node, "power on")
        ironic.provision(node, "deleted", "available")


def observations(prefix: str) -> list:
    records = asyncio.run(read_topics(KAFKA, [f"{prefix}baremetal.node"]))
    return [r for r in records.get(f"{prefix}baremetal.node", []) if header(r, "event_type") == b"pipeline.observed"]


@pytest.mark.integration
def test_lost_ends_are_reconciled_from_ironic(unique: str, tmp_path: Path) -> None:
    venv = ir.install()
    prefix, out = f"rec{unique}.notifications.", f"rec{unique}.pipeline."
    source, target, queue = f"ironic{unique}", f"ironicb{unique}", f"rec-{unique}"
    ironic = ir.Ironic(venv, tmp_path, source)
    clouds = ironic.clouds_yaml(tmp_path / "clouds.yaml")
    common = ["--topic-prefix", prefix, "--topic-partitions", "3"]
    bridge = spawn("bridge", *common, "--amqp-queue", queue, "--amqp-binding", f"{target}:{ir.TOPIC}.*",
                   "--no-amqp-queue-durable", "--metrics-port", "0", "--heartbeat-interval", "1",
                   log=tmp_path / "bridge.log")
    worker = spawn("worker", *common, "--app-id", f"rec-{unique}", "--output-prefix", out, "--store", "memory://",
                   "--no-web", "--lateness", "1", "--orphan-grace", "5", "--deadline", f"{POWER}=30",
                   "--deadline", f"{PROVISION}=30", log=tmp_path / "worker.log")
    reconcilers: list = []
    losses = Losses()
    try:
        wait_for_queue(queue)
        ironic.start()
        with ir.Dropper(source, target, losses) as dropper:
            losses.c = ironic.enroll("node-c")
            losses.a, losses.b = ironic.enroll("node-a"), ironic.enroll("node-b")
            lifecycle(ironic, losses.a, whole=True)
            lifecycle(ironic, losses.b, whole=False)
            ironic.provision(losses.c, "manage", "manageable")
            def lost() -> list[str]:  # the starts of A's and B's lost ends
                return [start for node, start in dropper.lost.values() if node in (losses.a, losses.b)]

            eventually(lambda: len(lost()) == 4, 30, "the relay lost 4 ends", detail=lambda: str(dropper.lost))
            assert all(lost()), dropper.lost  # each after its start
            lost_starts = set(lost())

            # 12 operations (create, manage, provide, deploy, power off; A also power on and undeploy),
            # 4 of them without their end: 8 close, 4 raise missing_end
            def settled():
                d = asyncio.run(derived(KAFKA, out))
                missing = [a for a in d.alerts.values() if a["kind"] == "missing_end"]
                return d if len(d.operations) >= 8 and len(missing) >= 4 else None

            before = eventually(settled, 120, "8 operations closed and 4 missing_end alerts",
                                detail=lambda: (tmp_path / "worker.log").read_text()[-2000:])
        assert {a["message_id"] for a in before.alerts.values() if a["kind"] == "missing_end"} == lost_starts
        assert len(before.operations) == 8 and not any(op["reconciled"] for op in before.operations.values())

        # Ironic is down: the reconciler asks, fails, writes nothing and closes nothing
        ironic.stop()
        args = ["--once", "--os-cloud", "ironic-test", "--os-client-config-file", str(clouds), "--output-prefix", out,
                "--topic-prefix", prefix, "--metrics-port", "0", "--recheck", "1", "--retry-max", "2"]
        for name in ("a", "b"):  # two at once, in groups of their own: each reads every alert
            reconcilers.append(spawn("reconcile", *args, "--group-id", f"rec-{name}-{unique}",
                                     log=tmp_path / f"reconcile-{name}.log"))
        eventually(lambda: "unreachable" in (tmp_path / "reconcile-a.log").read_text(), 60,
                   "the reconciler says the API is unreachable",
                   detail=lambda: (tmp_path / "reconcile-a.log").read_text()[-2000:])
        time.sleep(3)
        assert [p.poll() for p in reconcilers] == [None, None], (tmp_path / "reconcile-a.log").read_text()[-2000:]
        assert observations(prefix) == []

        # back: both reconcilers get their answers, retrying with backoff
        ironic.start()
        for proc, name in zip(reconcilers, ("a", "b")):
            assert proc.wait(120) == 0, (tmp_path / f"reconcile-{name}.log").read_text()[-3000:]

        def reconciled():
            d = asyncio.run(derived(KAFKA, out))
            return d if sum(op["reconciled"] for op in d.operations.values()) >= 4 else None

        after = eventually(reconciled, 60, "4 operations closed reconciled",
                           detail=lambda: (tmp_path / "worker.log").read_text()[-2000:])
        time.sleep(2)  # anything more (a second close, a duplicate) would show now
        after = asyncio.run(derived(KAFKA, out))
        closed = [op for op in after.operations.values() if op["reconciled"]]
        assert {op["start_message_id"] for op in closed} == lost_starts  # each lost end, and not one other
        assert len(closed) == 4 and all(op["outcome"] == "success" and op["late"] for op in closed)
        assert len(after.operations) == 12 and after.duplicate_ids.get("operation", 0) == 0
        resolved = {a["resolves"] for a in after.alerts.values() if a["kind"] == "reconciled"}
        assert resolved == {a["alert_id"] for a in after.alerts.values() if a["kind"] == "missing_end"}

        # one answer may close both of a node's operations (the other alert's job then ends unasked); what
        # the two reconcilers both wrote has one id, and the worker closed nothing twice
        observed = observations(prefix)
        ids = {header(r, "message_id").decode() for r in observed}
        assert {op["end_message_id"] for op in closed} <= ids and len(ids) <= 4, ids
        assert {codec.decode_event(r.value)["publisher_id"] for r in observed} == {"pipeline.reconciler"}

        for node in (losses.a, losses.b):
            truth = ironic.node(node)
            assert {k: after.nodes[node][k] for k in COMPARED} == {k: truth[k] for k in COMPARED}, node
        assert losses.c not in after.nodes

        # the sweep: A and B agree with Ironic now, C is not in the table at all
        sweep = spawn("reconcile", *args, "--group-id", f"rec-c-{unique}", "--sweep-interval", "1",
                      log=tmp_path / "reconcile-c.log")
        reconcilers.append(sweep)
        assert sweep.wait(120) == 0, (tmp_path / "reconcile-c.log").read_text()[-3000:]
        assert "sweep: 1 of Ironic's 3 nodes differ" in (tmp_path / "reconcile-c.log").read_text()
        swept = eventually(lambda: asyncio.run(derived(KAFKA, out)).nodes.get(losses.c), 60, "node C in the table")
        truth = ironic.node(losses.c)
        assert {k: swept[k] for k in COMPARED} == {k: truth[k] for k in COMPARED}
        final = asyncio.run(derived(KAFKA, out))
        assert len(final.operations) == 12 and sum(op["reconciled"] for op in final.operations.values()) == 4
    finally:
        stop(*reconcilers, bridge, worker)
        ironic.stop()
        asyncio.run(delete_queues(queue))
        for topics in (prefix, out):
            asyncio.run(delete_topics(topics))


@pytest.mark.integration
def test_a_throttling_api_and_a_reconciler_killed_mid_batch(unique: str, tmp_path: Path) -> None:
    """Stuck-state alerts of six real Ironic nodes, asked through a proxy that throttles (a 429 storm,
    then every third request) and answers slowly; the first reconciler is killed after its second
    observation, the next one of its group finishes: every alert answered, one observation id each."""
    import signal

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    venv = ir.install()
    prefix, out = f"thr{unique}.notifications.", f"thr{unique}.pipeline."
    relay = f"{prefix}baremetal.node"
    ironic = ir.Ironic(venv, tmp_path, f"ironic{unique}")
    procs: list = []
    throttle = None
    try:
        ironic.start()
        nodes = [ironic.enroll(f"node-{i}") for i in range(6)]
        throttle = ir.Throttle(ironic.url, storm=6, every=3, delay_s=0.5)
        clouds = tmp_path / "clouds.yaml"
        clouds.write_text(f"clouds:\n  thr:\n    auth_type: none\n    baremetal_endpoint_override: {throttle.url}\n")

        async def alerts() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(t, 3, 1) for t in (relay, f"{out}alerts")])
            finally:
                await admin.close()
            producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
            await producer.start()
            try:
                for node in nodes:
                    record = {"alert_id": f"stuck-{node}", "kind": "stuck_state", "resource_uuid": node,
                              "node_uuid": node, "operation": None, "publisher_id": "", "raised_at": 1,
                              "started_at": 0, "provision_state": "deploying", "detail": "test"}
                    await producer.send_and_wait(f"{out}alerts", codec.encode_value("alert", record), key=node.encode())
            finally:
                await producer.stop()

        asyncio.run(alerts())
        args = ["reconcile", "--once", "--os-cloud", "thr", "--os-client-config-file", str(clouds), "--output-prefix",
                out, "--topic-prefix", prefix, "--metrics-port", "0", "--concurrency", "1", "--retry-max", "2",
                "--group-id", f"thr-{unique}"]
        first = spawn(*args, log=tmp_path / "reconcile-1.log")
        procs.append(first)
        eventually(lambda: len(observations(prefix)) >= 2, 90, "two observations written",
                   detail=lambda: (tmp_path / "reconcile-1.log").read_text()[-2000:])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        written_before = len(observations(prefix))
        assert written_before < 6, "killed too late: every alert was answered already"

        second = spawn(*args, log=tmp_path / "reconcile-2.log")
        procs.append(second)
        assert second.wait(120) == 0, (tmp_path / "reconcile-2.log").read_text()[-3000:]
        observed = [codec.decode_event(r.value) for r in observations(prefix)]
        ids_by_node = collections.defaultdict(set)
        for event in observed:
            ids_by_node[event["resource_uuid"]].add(event["message_id"])
        assert sorted(ids_by_node) == sorted(nodes), "every alert answered"
        assert all(len(ids) == 1 for ids in ids_by_node.values()), ids_by_node  # the same id when asked twice
        assert throttle.counts["throttled"] >= 6 and throttle.counts["forwarded"] >= 6, throttle.counts
        log = (tmp_path / "reconcile-1.log").read_text() + (tmp_path / "reconcile-2.log").read_text()
        # one line per cause until the API answers again: the storm is one line, not one per request
        storm = re.search(r"answers again \((\d+) throttled\)", log)
        assert storm is not None and int(storm.group(1)) >= 6, log[-3000:]
        assert log.count("baremetal throttled") < throttle.counts["throttled"], log[-3000:]
        assert all(e["payload"]["ironic_object.data"]["provision_state"] == "enroll" for e in observed)
    finally:
        stop(*procs)
        ironic.stop()
        if throttle is not None:
            throttle.close()
        for topics in (prefix, out):
            asyncio.run(delete_topics(topics))


@pytest.mark.integration
def test_a_lost_image_upload_is_reconciled_from_glance(unique: str, tmp_path: Path) -> None:
    """A real Glance 33 (tests/support/glance.py): two images uploaded, the `image.upload` notification
    of one lost on the broker; after its missing_end the reconciler asks Glance, which says `active`:
    that upload closes reconciled, the other closed by its notification stays as it was."""
    from tests.support import glance as gl

    venv = gl.install()
    prefix, out = f"gla{unique}.notifications.", f"gla{unique}.pipeline."
    source, target, queue = f"glance{unique}", f"glanceb{unique}", f"gla-{unique}"
    glance = gl.Glance(venv, tmp_path, source)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"clouds:\n  glance-test:\n    auth_type: none\n    image_endpoint_override: {glance.url}\n")
    common = ["--topic-prefix", prefix, "--topic-partitions", "3"]
    bridge = spawn("bridge", *common, "--amqp-queue", queue, "--amqp-binding", f"{target}:notifications.*",
                   "--no-amqp-queue-durable", "--metrics-port", "0", "--heartbeat-interval", "1",
                   log=tmp_path / "bridge.log")
    worker = spawn("worker", *common, "--app-id", f"gla-{unique}", "--output-prefix", out, "--store", "memory://",
                   "--no-web", "--lateness", "1", "--deadline", "image.upload=20", log=tmp_path / "worker.log")
    procs = [bridge, worker]
    lost_image: list[str] = []
    try:
        wait_for_queue(queue)
        glance.start()
        with ir.Dropper(source, target, lambda et, data: et == "image.upload" and data.get("id") in lost_image,
                        topic="notifications") as dropper:
            kept = glance.create("kept")
            glance.put(kept, b"x" * 4096)
            lost = glance.create("lost")
            lost_image.append(lost)
            glance.put(lost, b"y" * 4096)
            eventually(lambda: len(dropper.lost) == 1, 30, "the relay lost the upload's end",
                       detail=lambda: str(dropper.passed))

            def alerted():
                d = asyncio.run(derived(KAFKA, out))
                return d if any(a["kind"] == "missing_end" for a in d.alerts.values()) else None

            before = eventually(alerted, 90, "a missing_end for the lost upload",
                                detail=lambda: (tmp_path / "worker.log").read_text()[-2000:])
        assert [a["resource_uuid"] for a in before.alerts.values() if a["kind"] == "missing_end"] == [lost]
        assert [op["resource_uuid"] for op in before.operations.values() if op["operation"] == "image.upload"] == [kept]

        rec = spawn("reconcile", "--once", "--os-cloud", "glance-test", "--os-client-config-file", str(clouds),
                    "--output-prefix", out, "--topic-prefix", prefix, "--metrics-port", "0",
                    "--group-id", f"gla-rec-{unique}", log=tmp_path / "reconcile.log")
        procs.append(rec)
        assert rec.wait(120) == 0, (tmp_path / "reconcile.log").read_text()[-3000:]

        def closed():
            d = asyncio.run(derived(KAFKA, out))
            return d if any(op["reconciled"] for op in d.operations.values()) else None

        after = eventually(closed, 60, "the lost upload closed reconciled")
        uploads = {op["resource_uuid"]: op for op in after.operations.values() if op["operation"] == "image.upload"}
        assert set(uploads) == {kept, lost}
        assert (uploads[lost]["reconciled"], uploads[lost]["outcome"], uploads[kept]["reconciled"]) == (True, "success", False)
        assert glance.image(lost)["status"] == "active"
        records = asyncio.run(read_topics(KAFKA, [f"{prefix}image"])).get(f"{prefix}image", [])
        seen = [codec.decode_event(r.value) for r in records if header(r, "event_type") == b"pipeline.observed"]
        assert [(e["resource_uuid"], e["payload"]["observation"]["source"], e["payload"]["status"]) for e in seen] == [
            (lost, "glance", "active")]
    finally:
        stop(*procs)
        glance.stop()
        asyncio.run(delete_queues(queue))
        for topics in (prefix, out):
            asyncio.run(delete_topics(topics))
