"""Acceptance 1 and 4 of the bridge: oslo.messaging's Notifier (rabbit driver, messagingv2) publishes
into the real RabbitMQ; the bridge (a subprocess) relays into the real Kafka; read back with aiokafka."""
from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import aio_pika
import pytest

from pipeline import codec
from pipeline.bridge.sink import java_partition
from tests.support.bridge import (
    AMQP_URL,
    amqp_bridge,
    cleanup_amqp,
    delete_topics,
    publish_mixed,
    queue_depth,
    read_all,
    run,
    seq_of,
    unique_topics,
)

pytestmark = pytest.mark.integration

N = int(os.environ.get("BRIDGE_TEST_MESSAGES", "10000"))
PARTITIONS = 3


def test_relay_10000_mixed_notifications(tmp_path: Path, unique: str) -> None:
    queue, prefix = f"bridge-test-{unique}", f"t{unique}."
    bridge = amqp_bridge(queue, prefix, unique, "--metrics-port", "0", log=tmp_path / "bridge.log").start()
    try:
        bridge.wait_for_log("RabbitMQ connected")
        started = time.monotonic()
        sent = publish_mixed(N, unique)
        publish_s = time.monotonic() - started
        records = run(read_all(prefix, N, timeout=120))
        relay_s = time.monotonic() - started
        assert run(queue_depth(queue)) == 0
        assert bridge.stop() == 0  # SIGTERM: a clean exit
    finally:
        bridge.stop()
        run(cleanup_amqp(queue, unique))
    print(f"\n{N} published by oslo's Notifier in {publish_s:.1f}s; all in Kafka after {relay_s:.1f}s")

    relay = [r for r in records if not r.topic.endswith("deadletter")]
    assert len(relay) == len(records) == N, "exactly one record per notification, no dead letters"
    by_seq = {}
    message_ids = set()
    for r in records:
        event = codec.decode_event(r.value)
        seq = seq_of(event)
        assert seq not in by_seq, f"notification {seq} relayed twice"
        by_seq[seq] = (r, event)
        message_ids.add(event["message_id"])
    assert sorted(by_seq) == list(range(N))
    assert len(message_ids) == N
    topics = collections.Counter()
    for s in sent:
        r, event = by_seq[s.seq]
        assert r.topic == prefix + s.family, (s, r.topic)
        assert event["event_type"] == s.event_type and event["priority"] == s.priority
        if s.uuid is None:
            assert r.key is None  # metadef_*: no UUID in the message
        else:
            assert r.key == s.uuid.encode()
            assert r.partition == java_partition(r.key, PARTITIONS)
        headers = dict(r.headers)
        assert headers["event_type"] == s.event_type.encode()
        assert headers["message_id"] == event["message_id"].encode()
        assert headers["priority"] == s.priority.encode()
        assert headers["content-type"].startswith(b"avro/binary")
        assert codec.schema("notification").fingerprint.hex().encode() in headers["content-type"]
        if s.family == "baremetal.node":
            assert event["payload"]["ironic_object.data"]["driver_info"]["ipmi_password"] == "***"
        topics[r.topic] += 1
    assert set(topics) == {prefix + f for f in ("baremetal.node", "baremetal.port", "image", "task",
                                                "metadef_namespace")}
    run(delete_topics(prefix))


BAD_BODIES = {
    "malformed": b'{"oslo.version": "2.0", "oslo.message": "{\\"message_id\\": \\"x\\", "',
    "not json": b"\x00\x01 this is not JSON at all",
    "broken inner": b'{"oslo.version": "2.0", "oslo.message": "{\\"message_id\\": \\"m-1\\", '
                    b'\\"event_type\\": \\"baremetal.node.power_set.end\\", \\"priority\\": \\"INFO\\", '
                    b'\\"payload\\": {}, \\"publisher_id\\": \\"p\\", \\"timestamp\\": \\"yesterday\\"}"}',
    "inner not an object": b'{"oslo.version": "2.0", "oslo.message": "[1, 2, 3]"}',
}


async def publish_raw(unique: str, bodies: list[bytes]) -> None:
    ironic, _ = unique_topics(unique)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("ironic", aio_pika.ExchangeType.TOPIC, durable=False)
        for body in bodies:
            await exchange.publish(aio_pika.Message(body, content_type="application/json"),
                                   routing_key=f"{ironic}.info")
    finally:
        await connection.close()


def test_undecodable_bodies_go_to_deadletter_and_relay_continues(tmp_path: Path, unique: str) -> None:
    queue, prefix = f"bridge-test-{unique}", f"t{unique}."
    bridge = amqp_bridge(queue, prefix, unique, log=tmp_path / "bridge.log").start()
    try:
        bridge.wait_for_log("RabbitMQ connected")
        sent = publish_mixed(5, unique)  # good ones before ...
        run(publish_raw(unique, list(BAD_BODIES.values())))
        sent += publish_mixed(5, unique)  # ... and after the bad ones
        records = run(read_all(prefix, len(sent) + len(BAD_BODIES), timeout=60))
        assert run(queue_depth(queue)) == 0  # every delivery acked, bad ones included
        assert bridge.proc.poll() is None  # still running
    finally:
        bridge.stop()
        run(cleanup_amqp(queue, unique))
    dead = [r for r in records if r.topic == prefix + "deadletter"]
    good = [r for r in records if r.topic != prefix + "deadletter"]
    assert len(good) == len(sent) == 10
    assert sorted(r.value for r in dead) == sorted(BAD_BODIES.values())  # as received
    ironic, _ = unique_topics(unique)
    for r in dead:
        headers = dict(r.headers)
        reason = headers["reason"].decode()
        assert reason and "\n" not in reason
        assert headers["exchange"] == b"ironic"
        assert headers["routing_key"] == f"{ironic}.info".encode()
    reasons = {r.value: dict(r.headers)["reason"].decode() for r in dead}
    assert "not JSON" in reasons[BAD_BODIES["not json"]]
    assert "timestamp" in reasons[BAD_BODIES["broken inner"]]
    assert "not a JSON object" in reasons[BAD_BODIES["inner not an object"]]
    run(delete_topics(prefix))
