"""/readyz answers 503 while a worker recovers its tables, and 200 afterwards.

The recovery is forced the way production meets it: a worker starting on a consumer group whose
`resources` table already has a sizeable changelog (with `memory://` every start replays all of it).
The changelog is written beforehand with records made by the stream agents' own state machine
(`pipeline.streams.operations.on_event` on real node events), so the replay is a real one; /readyz is
polled every few milliseconds from the moment the web server answers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from tests.support.ports import free_port
from tests.support.web_traffic import KAFKA, WorkerProcess, get, node_body, utc

pytestmark = pytest.mark.integration

NODES = 20_000
PARTITIONS = 6


def state_records(prefix: str) -> list[tuple[bytes, bytes, int]]:
    from aiokafka.partitioner import DefaultPartitioner

    from pipeline import events
    from pipeline.streams import operations
    from pipeline.streams.models import Settings, micros

    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    template = None
    records = []
    for i in range(NODES):
        node = f"{i:08x}-0000-4000-8000-{i:012x}"
        key = node.encode()
        partition = partitioner(key, every, every)
        if template is None:
            event = events.normalize(node_body(node, "power_set", "end", utc(60), power="power on",
                                               provision="active"), topic_prefix=prefix)
            template = operations.on_event(None, event, micros(event["timestamp"]), Settings(), partition).state
        records.append((key, orjson.dumps({**template, "p": partition}), partition))
    return records


async def write_changelog(topic: str, records: list[tuple[bytes, bytes | None, int]]) -> dict[int, int]:
    """A compacted topic with the records written in order (None: a tombstone); returns each
    partition's end offset."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA.split(","))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA.split(","), linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = [await producer.send(topic, value=value, key=key, partition=p) for key, value, p in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA.split(","))
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


def test_readyz_503_while_recovering_then_200(tmp_path: Path, unique: str) -> None:
    app_id, prefix = f"webrec-{unique}", f"webrec{unique}."
    asyncio.run(write_changelog(f"{app_id}-resources-changelog", state_records(prefix)))

    worker = WorkerProcess(tmp_path, app_id, prefix, free_port(), name="recovering").start()
    try:
        seen: list[tuple[float, int, str]] = []
        started = time.monotonic()
        while time.monotonic() - started < 120:
            try:
                status, body, _ = get(worker.url + "/readyz", timeout=5)
            except OSError:
                time.sleep(0.005)
                continue
            seen.append((round(time.monotonic() - started, 3), status, body["reason"]))
            if status == 200:
                break
            time.sleep(0.005)
        reasons = [(status, reason) for _, status, reason in seen]
        assert reasons and reasons[-1] == (200, "ready"), (seen[-5:], worker.log_tail())
        recovering = [t for t, status, reason in seen if (status, reason) == (503, "recovering tables")]
        assert recovering, f"never saw a recovery in {len(seen)} polls: {sorted(set(reasons))}"
        assert all(status == 503 for _, status, _ in seen[:-1])
        print(f"/readyz: 503 'recovering tables' from {recovering[0]} s to {recovering[-1]} s "
              f"({len(recovering)} polls), 200 at {seen[-1][0]} s")

        # everything replayed, and ready stays ready
        status, summary, _ = get(worker.url + "/api/summary", timeout=60)
        assert status == 200 and summary["nodes"]["total"] == NODES
        assert get(worker.url + "/readyz")[0] == 200
    finally:
        worker.stop()
