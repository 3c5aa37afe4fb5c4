"""Helpers of the worker's integration tests: scripted relay records produced straight into the real
Kafka (exactly what the bridge writes), `pipeline worker` as a subprocess, and the output topics
read back and decoded."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from pipeline import codec
from pipeline.streams.topics import Topics
from tests.support import scripted
from tests.support.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
PARTITIONS = 6


@dataclass
class Names:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def relay_prefix(self) -> str:
        return f"wt{self.tag}."

    def outputs(self, run: str = "a") -> str:
        return f"wt{self.tag}-{run}-out."

    def app_id(self, run: str = "a") -> str:
        return f"wt{self.tag}-{run}"

    def topics(self, run: str = "a") -> Topics:
        return Topics.named(self.relay_prefix, self.outputs(run))


def partition_of(key: bytes) -> int:
    return DefaultPartitioner()(key, list(range(PARTITIONS)), list(range(PARTITIONS)))


def tick_nodes() -> list[str]:
    """One node UUID per partition: their events move every partition's watermark."""
    found: dict[int, str] = {}
    while len(found) < PARTITIONS:
        node = str(uuid.uuid4())
        found.setdefault(partition_of(node.encode()), node)
    return [found[p] for p in range(PARTITIONS)]


def tick_bodies(seconds: float, nodes: list[str]) -> list[bytes]:
    return [scripted.ironic_body("baremetal.node.power_state_corrected.success", n, scripted.at(seconds),
                                 power_state="power off") for n in nodes]


async def _create(names: Iterable[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def create_relay_topics(names: Names) -> None:
    asyncio.run(_create(names.topics().sources))


async def _produce(bodies: list[bytes], prefix: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:
        futures = []
        for body in bodies:
            topic, key, value, headers = scripted.relay(scripted.normalized(body, prefix))
            futures.append(await producer.send(topic, value, key=key, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(bodies)


def produce(bodies: list[bytes], names: Names) -> int:
    """Normalize each body (as the bridge does) and produce it to its relay topic, in order."""
    return asyncio.run(_produce(bodies, names.relay_prefix))


def worker(names: Names, tmp: Path, run: str = "a", *extra: str) -> subprocess.Popen:
    log = open(tmp / f"worker-{run}.log", "ab")
    cmd = [sys.executable, "-m", "pipeline", "worker",
           "--topic-prefix", names.relay_prefix, "--output-prefix", names.outputs(run),
           "--app-id", names.app_id(run), "--topic-partitions", str(PARTITIONS),
           "--data-dir", str(tmp / f"data-{run}"), "--no-web", "--loglevel", "warning", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


async def _lag(names: Names, run: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(names.app_id(run))
        tps = [TopicPartition(t, p) for t in names.topics(run).sources for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            lag += ends[tp] - (meta.offset if meta is not None and meta.offset >= 0 else 0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


def wait_caught_up(names: Names, proc: subprocess.Popen, run: str = "a", timeout_s: float = 60.0) -> None:
    """Until the worker's group has committed every relay record (faust commits every 2.8 s)."""
    def caught_up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}")
        return asyncio.run(_lag(names, run)) == 0

    def stacks() -> str:
        proc.send_signal(signal.SIGUSR1)  # the worker logs its asyncio task stacks: what it waits on
        time.sleep(1.0)
        return "(the worker logged its task stacks)"

    # any client error: the group may not exist yet
    eventually(caught_up, timeout_s, f"worker {run} caught up", interval=0.5, ignore=(Exception,), detail=stacks)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


async def _read(topic: str) -> list[tuple[bytes, dict, dict]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out = []
        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            batch = await consumer.getmany(timeout_ms=2000)
            for records in batch.values():
                for rec in records:
                    out.append((rec.key, codec.decode_value(rec.value), dict(rec.headers or ())))
        return out
    finally:
        await consumer.stop()


def read(topic: str) -> list[tuple[bytes, dict, dict]]:
    """Every record of `topic`: (key, decoded value, headers)."""
    return asyncio.run(_read(topic))


def latest_by_key(records: list[tuple[bytes, dict, dict]]) -> dict[bytes, dict]:
    """What a compacted topic converges to (records of one key keep their order: one partition)."""
    latest: dict[bytes, dict] = {}
    for key, value, _ in records:
        latest[key] = value
    return latest


def summary(tmp: Path, run: str = "a") -> dict:
    import json

    for line in reversed((tmp / f"worker-{run}.log").read_text(errors="replace").splitlines()):
        if line.startswith("{") and '"events"' in line:
            return json.loads(line)
    raise AssertionError(f"no summary in worker-{run}.log")
