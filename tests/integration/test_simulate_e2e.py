"""Acceptance 1 of the simulator: `pipeline simulate --nodes 1000 --loss 0.02 --duplicates 0.01
--truth FILE` through oslo.messaging into the real RabbitMQ, the bridge and a worker: the set of
missing_end alerts equals the set of operations whose end the truth file says was dropped."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline import codec
from pipeline.bench.procs import Names, end_run, start_bridge, start_worker

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def _alerts(topic: str, expected: set, timeout: float) -> tuple[set, dict]:
    """missing_end alerts (resource, operation, start message id) read until they cover `expected`,
    then a few seconds more so that an extra alert would be seen too."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA.split(","), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    got: set = set()
    kinds: dict = {}
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        while time.monotonic() < (settle_until or deadline):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    alert = codec.decode_value(record.value)
                    kinds[alert["kind"]] = kinds.get(alert["kind"], 0) + 1
                    if alert["kind"] == "missing_end":
                        got.add((alert["resource_uuid"], alert["operation"], alert["message_id"]))
            if settle_until is None and got >= expected:
                settle_until = time.monotonic() + 5.0
    finally:
        await consumer.stop()
    return got, kinds


@pytest.mark.integration
async def test_missing_end_alerts_are_the_dropped_ends(tmp_path) -> None:
    names = Names()
    truth_path = tmp_path / "truth.json"
    bridge = start_bridge(names, amqp_url=AMQP_URL, bootstrap=KAFKA)
    worker = start_worker(names, bootstrap=KAFKA, data_dir=str(tmp_path / "worker"))
    try:
        await bridge.wait_for("relaying from", 60)
        simulate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "simulate", "--output", "rabbit", "--amqp-url", AMQP_URL,
            "--nodes", "1000", "--images", "50", "--events", "6000", "--rate", "0", "--seed", "7",
            "--loss", "0.02", "--duplicates", "0.01", "--truth", str(truth_path),
            "--ironic-topic", names.ironic_topic, "--glance-topic", names.glance_topic, "--quiet",
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(simulate.communicate(), 120)
        assert simulate.returncode == 0, err.decode()[-2000:]
        truth = json.loads(truth_path.read_text())
        dropped = {(op["resource_uuid"], op["operation"], op["start_message_id"])
                   for op in truth["operations"] if op["expected"] == "missing_end"}
        assert truth["summary"]["ends_dropped"] == sum(op["end_dropped"] for op in truth["operations"]) > 20
        assert truth["summary"]["events_duplicated"] > 20

        got, kinds = await _alerts(f"{names.output_prefix}alerts", dropped, timeout=90)
        assert worker.alive(), worker.tail()
        missing = dropped - got
        extra = got - dropped
        assert not missing and not extra, (
            f"{len(missing)} dropped ends without a missing_end alert, e.g. {sorted(missing)[:3]}; "
            f"{len(extra)} missing_end alerts for operations that ended, e.g. {sorted(extra)[:3]}; "
            f"alert kinds {kinds}")
    finally:
        await end_run(names, AMQP_URL, KAFKA, bridge, worker)
