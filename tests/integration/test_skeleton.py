"""The walking skeleton, end to end on the real brokers: oslo.messaging's Notifier publishes a node's
power_set.start and .end into RabbitMQ, `pipeline bridge` relays them to Kafka keyed by the node,
`pipeline worker` pairs them, and the duration record is read back from the operations topic."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline import codec
from tests.support.oslo_rabbit import OsloPublisher, power_set_payload, wait_for_queue
from tests.support.processes import spawn, stop

KAFKA = "127.0.0.1:9092"


async def _records(topic: str, want, timeout: float) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, auto_offset_reset="earliest",
                                enable_auto_commit=False, metadata_max_age_ms=1000)
    await consumer.start()
    found: list = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not want(found):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(batch)
    finally:
        await consumer.stop()
    return found


@pytest.mark.integration
def test_power_on_duration_from_oslo_notifier_to_operations_topic(unique: str, tmp_path: Path) -> None:
    node = str(uuid.uuid4())
    prefix, out = f"skel{unique}.notifications.", f"skel{unique}.pipeline."
    common = ["--topic-prefix", prefix, "--topic-partitions", "3"]
    worker = spawn("worker", *common, "--app-id", f"skel-{unique}", "--output-prefix", out,
                    "--store", "memory://", "--no-web", log=tmp_path / "worker.log")
    bridge = spawn("bridge", *common, "--amqp-queue", f"skel-{unique}", "--metrics-port", "0",
                    log=tmp_path / "bridge.log")
    try:
        wait_for_queue(f"skel-{unique}")
        payload = power_set_payload(node)
        with OsloPublisher("ironic") as ironic:
            ironic.publish("baremetal.node.power_set.start", payload)
            time.sleep(1.2)
            payload["ironic_object.data"]["power_state"] = "power on"
            ironic.publish("baremetal.node.power_set.end", payload)

        # the bridge's heartbeats share the relay partitions: wait for this node's two records
        is_mine = lambda r: r.key == node.encode()  # noqa: E731
        relayed = asyncio.run(_records(f"{prefix}baremetal.node", lambda rs: sum(map(is_mine, rs)) >= 2, 60))
        mine = [r for r in relayed if is_mine(r)]
        assert [codec.decode_event(r.value)["phase"] for r in mine] == ["start", "end"], (tmp_path / "bridge.log").read_text()[-2000:]
        start, end = (codec.decode_event(r.value) for r in mine)

        ops = asyncio.run(_records(f"{out}operations", lambda r: len(r) >= 1, 90))
        assert len(ops) == 1, (tmp_path / "worker.log").read_text()[-3000:]
        op = codec.decode_value(ops[0].value)
        assert ops[0].key == node.encode()
        assert op["operation"] == "baremetal.node.power_set"
        assert op["node_uuid"] == node and op["outcome"] == "success"
        assert op["to_power"] == "power on"
        assert (op["start_message_id"], op["end_message_id"]) == (start["message_id"], end["message_id"])
        parse = lambda ts: datetime.fromisoformat(ts.replace("Z", "+00:00"))  # noqa: E731
        expected_ms = (parse(end["timestamp"]) - parse(start["timestamp"])).total_seconds() * 1000
        assert op["duration_ms"] == pytest.approx(expected_ms, abs=1)
        assert 1000 <= op["duration_ms"] < 10_000
    finally:
        stop(bridge, worker)
