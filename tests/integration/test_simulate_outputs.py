"""`pipeline simulate --output kafka`: straight to the relay topics, as the bridge would write them."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline import catalog, codec, events
from pipeline.bench.procs import Names, count_records, delete_topics

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


@pytest.mark.integration
def test_kafka_output_writes_every_event_to_its_relay_topic(tmp_path: Path) -> None:
    names = Names()
    truth = tmp_path / "truth.json"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "simulate", "--output", "kafka", "--kafka-bootstrap-servers", KAFKA,
             "--topic-prefix", names.topic_prefix, "--topic-partitions", "3", "--nodes", "60", "--images", "10",
             "--events", "800", "--rate", "0", "--duplicates", "0.05", "--seed", "4", "--truth", str(truth), "--quiet"],
            capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        summary = json.loads(truth.read_text())["summary"]
        topics = sorted({events.topic_for(row.family, names.topic_prefix) for row in catalog.ROWS})
        assert asyncio.run(count_records(KAFKA, topics)) == summary["events_sent"] > 800

        async def first_records() -> list:
            consumer = AIOKafkaConsumer(f"{names.topic_prefix}baremetal.node", bootstrap_servers=KAFKA.split(","),
                                        auto_offset_reset="earliest", group_id=None)
            await consumer.start()
            try:
                batch = await consumer.getmany(timeout_ms=5000, max_records=50)
                return [r for records in batch.values() for r in records]
            finally:
                await consumer.stop()

        records = asyncio.run(first_records())
        assert records
        for record in records:
            event = codec.decode_event(record.value)
            headers = dict(record.headers)
            assert headers["event_type"].decode() == event["event_type"]
            assert headers["message_id"].decode() == event["message_id"]
            assert record.key.decode() == event["resource_uuid"] == event["node_uuid"]
            assert event["topic"] == f"{names.topic_prefix}baremetal.node"
    finally:
        asyncio.run(delete_topics(KAFKA, [f"bench-{names.run}."]))
