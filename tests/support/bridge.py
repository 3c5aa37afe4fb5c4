"""Helpers of the bridge's integration tests: oslo.messaging's own Notifier on the real RabbitMQ,
the bridge as a subprocess, and reading the relay topics back with aiokafka."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import oslo_messaging
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from oslo_config import cfg
from oslo_messaging import transport as oslo_transport

from pipeline import codec
from tests.support.eventually import eventually
from tests.support.oslo_rabbit import ready_in_queue

ROOT = Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IRONIC_TOPIC = "ironic_versioned_notifications"
GLANCE_TOPIC = "notifications"


def notifier(exchange: str, topic: str, publisher_id: str, url: str = AMQP_URL) -> oslo_messaging.Notifier:
    """oslo's Notifier, rabbit driver, messagingv2, on `exchange` (the service's control_exchange)."""
    conf = cfg.ConfigOpts()
    conf([], project="pipeline-bridge-tests")
    conf.register_opts(oslo_transport._transport_opts)
    conf.set_override("control_exchange", exchange)  # what set_transport_defaults('ironic') does
    transport = oslo_messaging.get_notification_transport(conf, url=url.replace("amqp://", "rabbit://"))
    return oslo_messaging.Notifier(transport, driver="messagingv2", topics=[topic], publisher_id=publisher_id)


@dataclass(frozen=True)
class Sent:
    seq: int
    event_type: str
    priority: str
    family: str
    uuid: str | None


def _ironic_node(node: str, seq: int, **extra: Any) -> dict:
    data = {"uuid": node, "name": f"bm-{node[:8]}", "power_state": "power off", "provision_state": "active",
            "driver": "ipmi", "driver_info": {"ipmi_password": "hunter2"}, "extra": {"seq": seq}, **extra}
    return {"ironic_object.name": "NodePayload", "ironic_object.namespace": "ironic",
            "ironic_object.version": "1.17", "ironic_object.data": data}


def mixed_notifications(n: int, nodes: int = 50) -> Iterator[tuple[str, str, str, Any, Sent]]:
    """(service, priority, event_type, payload, Sent) for a realistic mix: node power and provision
    operations, port CRUD, Glance image upload (one failing, with a text payload), members, tasks,
    and a metadef event without any UUID."""
    node_ids = [str(uuid.uuid4()) for _ in range(nodes)]
    image_ids = [str(uuid.uuid4()) for _ in range(nodes)]
    for seq in range(n):
        node, image = node_ids[seq % nodes], image_ids[seq % nodes]
        kind = seq % 10
        if kind in (0, 1, 2):
            et = ("baremetal.node.power_set.start", "baremetal.node.power_set.end",
                  "baremetal.node.provision_set.success")[kind]
            yield "ironic", "info", et, _ironic_node(node, seq), Sent(seq, et, "info", "baremetal.node", node)
        elif kind == 3:
            et = "baremetal.node.provision_set.error"
            yield "ironic", "error", et, _ironic_node(node, seq, last_error="deploy failed"), \
                Sent(seq, et, "error", "baremetal.node", node)
        elif kind == 4:
            port = str(uuid.uuid4())
            payload = {"ironic_object.name": "PortCRUDPayload", "ironic_object.namespace": "ironic",
                       "ironic_object.version": "1.8",
                       "ironic_object.data": {"uuid": port, "node_uuid": node, "address": "52:54:00:12:34:56",
                                              "extra": {"seq": seq}}}
            yield "ironic", "info", "baremetal.port.create.end", payload, \
                Sent(seq, "baremetal.port.create.end", "info", "baremetal.port", port)
        elif kind in (5, 6):
            et = "image.prepare" if kind == 5 else "image.upload"
            payload = {"id": image, "name": "ubuntu", "status": "saving", "size": seq, "checksum": None,
                       "properties": {"seq": str(seq)}}
            yield "glance", "info", et, payload, Sent(seq, et, "info", "image", image)
        elif kind == 7:
            yield "glance", "error", "image.upload", f"seq={seq} Image storage media is full for {image}", \
                Sent(seq, "image.upload", "error", "image", image)
        elif kind == 8:
            task = str(uuid.uuid4())
            et = "task.run"
            payload = {"id": task, "type": "import", "status": "processing", "owner": "p1",
                       "input": {"image_id": image}, "result": None, "message": f"seq={seq}"}
            yield "glance", "info", et, payload, Sent(seq, et, "info", "task", task)
        else:
            et = "metadef_namespace.create"
            payload = {"namespace": f"OS::Test::{seq}", "display_name": f"seq={seq}", "owner": "p1"}
            yield "glance", "info", et, payload, Sent(seq, et, "info", "metadef_namespace", None)


def seq_of(event: dict) -> int:
    p = event["payload"]
    if isinstance(p, str):
        return int(p.split()[0].removeprefix("seq="))
    if "ironic_object.data" in p:
        return int(p["ironic_object.data"]["extra"]["seq"])
    if "properties" in p:
        return int(p["properties"]["seq"])
    if "message" in p:
        return int(p["message"].removeprefix("seq="))
    return int(p["display_name"].removeprefix("seq="))


def check_all_relayed(records: list, n: int) -> int:
    """Every notification is in Kafka at least once; returns the number of extra copies."""
    seqs, message_ids = [], set()
    for r in records:
        assert not r.topic.endswith("deadletter"), dict(r.headers).get("reason")
        event = codec.decode_event(r.value)
        seqs.append(seq_of(event))
        message_ids.add(event["message_id"])
    assert set(seqs) == set(range(n)), f"missing: {sorted(set(range(n)) - set(seqs))[:20]}"
    assert len(message_ids) == n
    return len(seqs) - n


class Publisher:
    """One Notifier per service, as Ironic and Glance each have theirs. Tests give the topics a
    unique suffix (`<topic>_<unique>`), so their routing keys reach only their own bridge queue."""

    def __init__(self, ironic_topic: str = IRONIC_TOPIC, glance_topic: str = GLANCE_TOPIC) -> None:
        self.ironic = notifier("ironic", ironic_topic, "ironic-conductor.test-host")
        self.glance = notifier("glance", glance_topic, "image.glance-api-test")

    def send(self, service: str, priority: str, event_type: str, payload: Any) -> None:
        n = self.ironic if service == "ironic" else self.glance
        getattr(n, priority)({}, event_type, payload)

    def close(self) -> None:
        for n in (self.ironic, self.glance):
            n.transport.cleanup()


def unique_topics(unique: str) -> tuple[str, str]:
    return f"{IRONIC_TOPIC}_{unique}", f"{GLANCE_TOPIC}_{unique}"


def unique_bindings(unique: str) -> list[str]:
    ironic, glance = unique_topics(unique)
    return ["--amqp-binding", f"ironic:{ironic}.*", "--amqp-binding", f"glance:{glance}.*"]


def publish_mixed(n: int, unique: str, nodes: int = 50) -> list[Sent]:
    pub = Publisher(*unique_topics(unique))
    sent = []
    try:
        for service, priority, et, payload, s in mixed_notifications(n, nodes):
            pub.send(service, priority, et, payload)
            sent.append(s)
    finally:
        pub.close()
    return sent


# --- the bridge as a subprocess -------------------------------------------------------------------


class Bridge:
    def __init__(self, *argv: str, log: Path, env: dict | None = None) -> None:
        self.argv = [sys.executable, "-m", "pipeline", "bridge", *argv]
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Bridge:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=out, env=self.env)
        out.close()
        return self

    def wait_for_log(self, needle: str, timeout: float = 60, count: int = 1) -> None:
        def logged() -> bool:
            if self.log.exists() and self.log.read_text(errors="replace").count(needle) >= count:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"bridge exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            return False

        eventually(logged, timeout, f"{needle!r} in the bridge log", interval=0.1,
                   detail=lambda: self.log.read_text(errors="replace")[-3000:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def bridge_args(queue: str, prefix: str, *extra: str, kafka: str = KAFKA) -> list[str]:
    return ["--amqp-queue", queue, "--topic-prefix", prefix, "--kafka-bootstrap-servers", kafka,
            "--topic-partitions", "3", "--metrics-port", "0", "--no-amqp-queue-durable", *extra]


def amqp_bridge(queue: str, prefix: str, unique: str, *extra: str, log: Path, kafka: str = KAFKA) -> Bridge:
    """A bridge (not started yet) on its own queue, bound to the test's unique topics only."""
    return Bridge(*bridge_args(queue, prefix, *unique_bindings(unique), *extra, kafka=kafka), log=log)


# --- RabbitMQ and Kafka read-back -------------------------------------------------------------------


async def queue_depth(queue: str) -> int:
    return await ready_in_queue(queue, AMQP_URL)


async def delete_queues(*queues: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for queue in queues:
            channel = await connection.channel()
            try:
                await channel.queue_delete(queue)
            except Exception:  # not there: nothing to clean
                pass
    finally:
        await connection.close()


async def cleanup_amqp(queue: str, unique: str) -> None:
    """The bridge's queue and the default queues oslo's publisher declared for the test topics."""
    ironic, glance = unique_topics(unique)
    await delete_queues(queue, *(f"{t}.{p}" for t in (ironic, glance) for p in ("info", "error", "warn")))


async def topics_with_prefix(prefix: str, kafka: str = KAFKA) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()


async def delete_topics(prefix: str, kafka: str = KAFKA) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
    except Exception:
        pass
    finally:
        await admin.close()


def is_heartbeat(record) -> bool:
    """The bridge's heartbeats are marked by a header, so a consumer skips them without decoding."""
    return ("kind", b"heartbeat") in (record.headers or ())


async def read_all(prefix: str, expected: int, timeout: float = 60, kafka: str = KAFKA,
                   settle_s: float = 2.0, heartbeats: bool = False) -> list:
    """Every record of the topics starting with `prefix`: waits until `expected` arrived (then
    `settle_s` more, so extra copies would show) or `timeout`. Heartbeats are left out unless asked
    for (and then not counted in `expected`)."""
    deadline = time.monotonic() + timeout
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list = []
    try:
        assigned: set = set()
        done_at = None
        while time.monotonic() < deadline:
            cluster = await consumer._client.fetch_all_metadata()
            topics = [t for t in cluster.topics() if t.startswith(prefix)]
            tps = {TopicPartition(t, p) for t in topics for p in (cluster.partitions_for_topic(t) or ())}
            if tps - assigned:
                positions = {tp: await consumer.position(tp) for tp in assigned}
                assigned = tps
                consumer.assign(list(tps))
                for tp in tps:
                    if tp in positions:
                        consumer.seek(tp, positions[tp])
                    else:
                        await consumer.seek_to_beginning(tp)
            if not assigned:  # getmany without partitions waits for an assignment, not the timeout
                await asyncio.sleep(0.5)
                continue
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for recs in batches.values():
                records.extend(r for r in recs if heartbeats or not is_heartbeat(r))
            if sum(not is_heartbeat(r) for r in records) >= expected:
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at >= settle_s:
                    break
    finally:
        await consumer.stop()
    return records


def run(coro):
    return asyncio.run(coro)
