"""The bridge's other sources and edges on the real brokers: JSON lines from a file, the topics of
oslo.messaging's Kafka driver, a declaration RabbitMQ refuses, and the /metrics endpoint."""
from __future__ import annotations

import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from oslo_messaging._drivers import common as driver_common
from oslo_serialization import jsonutils
from oslo_utils import timeutils

from pipeline import codec
from pipeline.bridge.sink import java_partition
from tests.support.bridge import (
    KAFKA,
    ROOT,
    Bridge,
    amqp_bridge,
    bridge_args,
    cleanup_amqp,
    delete_topics,
    publish_mixed,
    read_all,
    run,
    unique_bindings,
)
from tests.support.eventually import eventually
from tests.support.oslo_wire import publish
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


def node_payload(seq: int) -> dict:
    return {"ironic_object.name": "NodePayload", "ironic_object.namespace": "ironic", "ironic_object.version": "1.17",
            "ironic_object.data": {"uuid": NODE, "power_state": "power on", "extra": {"seq": seq}}}


def test_file_source_relays_lines_and_dead_letters_bad_ones(tmp_path: Path, unique: str) -> None:
    prefix = f"t{unique}."
    good = publish("baremetal.node.power_set.end", node_payload(1))
    capture = publish("image.upload", {"id": "6a3f0d1e-2b7c-4f3e-9d8a-5c1e7b2a9f40", "size": 8},
                      publisher_id="image.glance-api-1")
    lines = [
        good.body,
        jsonutils.dump_as_bytes({"exchange": capture.exchange, "routing_key": capture.routing_key,
                                 "body": capture.body.decode()}),
        b"this line is not JSON",
    ]
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "bridge", "--source", f"file:{path}",
                           "--topic-prefix", prefix, "--kafka-bootstrap-servers", KAFKA, "--topic-partitions", "3",
                           "--no-precreate-topics", "--metrics-port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 relayed, 1 dead-lettered" in proc.stderr
    records = run(read_all(prefix, 3, timeout=30, settle_s=1))
    by_topic = {r.topic: r for r in records}
    assert set(by_topic) == {prefix + "baremetal.node", prefix + "image", prefix + "deadletter"}
    assert by_topic[prefix + "baremetal.node"].key == NODE.encode()
    assert codec.decode_event(by_topic[prefix + "image"].value)["event_type"] == "image.upload"
    dead = by_topic[prefix + "deadletter"]
    assert dead.value == b"this line is not JSON" and b"not JSON" in dict(dead.headers)["reason"]
    run(delete_topics(prefix))


def oslo_kafka_value(event_type: str, priority: str, payload: dict) -> bytes:
    """What oslo.messaging's Kafka driver writes: Notifier._notify's message, pack_message (the context
    nested as `_context`) and serialize_msg's 2.0 envelope, dumped with jsonutils. (The driver itself
    needs confluent-kafka, which this project does not install; these are its own functions and steps.)"""
    msg = dict(message_id=str(uuid.uuid4()), publisher_id="ironic-conductor.c1", event_type=event_type,
               priority=priority.upper(), payload=payload, timestamp=str(timeutils.utcnow()))
    msg["_context"] = {"user": "u1", "project_id": "p1", "auth_token": None, "request_id": "req-1"}
    return jsonutils.dump_as_bytes(driver_common.serialize_msg(msg))


async def produce_oslo_topics(topic: str, n: int) -> list[tuple[str, int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    names = [f"{topic}.info", f"{topic}.error", f"{topic}.info.myvhost"]
    await admin.create_topics([NewTopic(t, 2, 1) for t in names])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA)
    await producer.start()
    sent = []
    try:
        for seq in range(n):
            name = names[seq % 3]
            priority = "error" if name.endswith(".error") else "info"
            et = "baremetal.node.power_set.error" if priority == "error" else "baremetal.node.power_set.end"
            await producer.send_and_wait(name, oslo_kafka_value(et, priority, node_payload(seq)))  # no key, like oslo
            sent.append((name, seq))
    finally:
        await producer.stop()
    return sent


async def committed(group: str, topics: list[str]) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for t in topics:
            for p in consumer.partitions_for_topic(t) or (await consumer._client.fetch_all_metadata()).partitions_for_topic(t):
                total += await consumer.committed(TopicPartition(t, p)) or 0
        return total
    finally:
        await consumer.stop()


def test_oslo_kafka_driver_topics(tmp_path: Path, unique: str) -> None:
    oslo_topic, prefix, group = f"oslo_{unique}", f"t{unique}.", f"bridge-test-{unique}"
    n = 60
    run(produce_oslo_topics(oslo_topic, n))
    bridge = Bridge("--source", f"oslo-kafka:{oslo_topic}", "--oslo-kafka-group", group, "--topic-prefix", prefix,
                    "--kafka-bootstrap-servers", KAFKA, "--topic-partitions", "3", "--no-precreate-topics",
                    "--metrics-port", "0", log=tmp_path / "bridge.log").start()
    try:
        records = run(read_all(prefix, n, timeout=90))
        assert bridge.stop() == 0
    finally:
        bridge.stop()
    assert len(records) == n
    assert {r.topic for r in records} == {prefix + "baremetal.node"}
    seqs = sorted(codec.decode_event(r.value)["payload"]["ironic_object.data"]["extra"]["seq"] for r in records)
    assert seqs == list(range(n))
    for r in records:
        assert r.key == NODE.encode() and r.partition == java_partition(r.key, 3)
    # offsets were committed for everything relayed: a restart does not relay them again
    assert run(committed(group, [f"{oslo_topic}.info", f"{oslo_topic}.error", f"{oslo_topic}.info.myvhost"])) == n
    run(delete_topics(prefix))
    run(delete_topics(oslo_topic + "."))


def test_refused_exchange_declaration_exits_2_with_one_line(unique: str) -> None:
    # oslo declared the `ironic` exchange non-durable (amqp_durable_queues=False); a durable declare
    # of the same exchange is refused by RabbitMQ with PRECONDITION_FAILED
    publish_mixed(1, unique)
    queue = f"bridge-test-{unique}"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "bridge", *bridge_args(queue, f"t{unique}.", *unique_bindings(unique)),
             "--no-precreate-topics", "--amqp-exchange-durable"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        run(cleanup_amqp(queue, unique))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pipeline bridge: error:") and "PRECONDITION_FAILED" in last
    assert "--amqp-exchange-durable" in last
    assert "Traceback" not in proc.stderr


def test_metrics_endpoint(tmp_path: Path, unique: str) -> None:
    queue, prefix, port = f"bridge-test-{unique}", f"t{unique}.", free_port()
    bridge = amqp_bridge(queue, prefix, unique, "--no-precreate-topics", "--metrics-port", str(port),
                         log=tmp_path / "bridge.log").start()
    try:
        bridge.wait_for_log("RabbitMQ connected")
        publish_mixed(20, unique)
        run(read_all(prefix, 20, timeout=60, settle_s=0.5))
        def scraped() -> str:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return text if "bridge_relayed_total{" in text else ""

        text = eventually(scraped, 10, "bridge_relayed_total on /metrics")
    finally:
        bridge.stop()
        run(cleanup_amqp(queue, unique))
    relayed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("bridge_relayed_total{"))
    assert relayed == 20
    assert f'topic="{prefix}baremetal.node"' in text
    assert "bridge_in_flight_deliveries 0.0" in text
    assert "bridge_produce_latency_seconds_count 20.0" in text
    run(delete_topics(prefix))
