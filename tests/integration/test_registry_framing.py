"""Registry framing end to end, against the local Apicurio Registry that `make up` starts with
AVRO_FRAMING=registry: the simulator publishes through oslo.messaging into RabbitMQ, the bridge and
a worker run with `--avro-framing registry`, and two downstream consumers read every relay topic and
the three output topics:

1. a JVM app (kafka-clients + Apicurio's own Avro deserializer, from Maven Central), which resolves
   each record's 4-byte id through Apicurio's API;
2. a Python consumer that resolves ids over the Confluent-compatible REST API and decodes with
   fastavro, sharing nothing with the pipeline's codec.

Both must decode every record to what the pipeline's own codec reads from the same bytes. Then a
worker whose operation schema gained a field without a default is refused by the registry and exits
with one line (acceptance 3).
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline import codec, registry
from pipeline.bench.procs import Names, Proc, count_records, delete_queues, delete_topics, start_bridge, start_worker
from tests.support.private_stack import PrivateStack

ROOT = Path(__file__).resolve().parents[2]
CONSUMER = Path(__file__).with_name("registry_consumer")
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REGISTRY = os.environ.get("SCHEMA_REGISTRY_URL", registry.DEFAULT_URL)
APICURIO_V3 = REGISTRY.replace("/apis/ccompat/v7", "/apis/registry/v3")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def local_registry() -> str:
    """The stack as CI gets it: `make up` with registry framing also starts Apicurio (idempotent)."""
    done = subprocess.run(["make", "-s", "up"], cwd=ROOT, env={**os.environ, "AVRO_FRAMING": "registry"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return REGISTRY


@pytest.fixture(scope="module")
def jvm_classpath() -> str:
    """Kafka's client and Apicurio's Avro deserializer from Maven Central, fetched once."""
    if not shutil.which("java") or not shutil.which("mvn"):
        pytest.fail("the registry test needs java and mvn (the Kafka broker needs them too)")
    lib, marker = CONSUMER / "lib", CONSUMER / "lib" / ".complete"
    if not marker.is_file() or (CONSUMER / "pom.xml").stat().st_mtime > marker.stat().st_mtime:
        shutil.rmtree(lib, ignore_errors=True)
        done = subprocess.run(["mvn", "-B", "-q", "-Dstyle.color=never", "-f", str(CONSUMER / "pom.xml"),
                               "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        marker.touch()
    return f"{lib}/*"


async def _topics(prefixes: tuple[str, ...]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA.split(","))
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefixes))
    finally:
        await admin.close()


async def _raw_records(topics: list[str]) -> dict[tuple[str, int, int], tuple[bytes, dict]]:
    """(topic, partition, offset) -> (value, headers) of every record, read to the end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA.split(","), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - topics made since start
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict = {}
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    out[(r.topic, r.partition, r.offset)] = (r.value, dict(r.headers or ()))
        return out
    finally:
        await consumer.stop()


def _is_heartbeat(headers: dict) -> bool:
    return headers.get("kind") == b"heartbeat"


async def _notifications(topics: list[str]) -> int:
    """Relayed notifications in `topics`: the bridge's heartbeats (every interval, forever) left out."""
    return sum(not _is_heartbeat(headers) for _, headers in (await _raw_records(topics)).values())


async def _settled(topics: list[str], at_least: int, timeout: float, count=None) -> int:
    """The record count of `topics` (by `count`; all records by default) once it has reached
    `at_least` and not moved for 6 s."""
    count_of = count or (lambda ts: count_records(KAFKA, ts))
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        n = await count_of(topics)
        if n != last:
            last, since = n, time.monotonic()
        elif n >= at_least and time.monotonic() - since >= 6:
            return n
        await asyncio.sleep(1)
    raise TimeoutError(f"{topics}: {last} records, expected at least {at_least}")


class RestConsumer:
    """A downstream Python app: ids resolved over the registry's REST API, bodies read by fastavro."""

    def __init__(self, url: str) -> None:
        self.url, self.schemas, self.fetched = url, {}, 0

    def decode(self, value: bytes) -> dict:
        assert value[0] == 0, f"not registry framing: {value[:8]!r}"
        schema_id = int.from_bytes(value[1:5], "big")
        if schema_id not in self.schemas:
            with urllib.request.urlopen(f"{self.url}/schemas/ids/{schema_id}", timeout=10) as answer:
                self.schemas[schema_id] = fastavro.parse_schema(json.loads(json.load(answer)["schema"]))
            self.fetched += 1
        return fastavro.schemaless_reader(io.BytesIO(value[5:]), self.schemas[schema_id], None)


def _delete_subjects(url: str, run: str) -> None:
    """The run's subjects, so the local registry does not pile them up (it keeps them in memory)."""
    with urllib.request.urlopen(f"{url}/subjects", timeout=10) as answer:
        subjects = [s for s in json.load(answer) if run in s]
    for subject in subjects:
        urllib.request.urlopen(urllib.request.Request(f"{url}/subjects/{subject}", method="DELETE"), timeout=10).close()


def _plain(record: dict) -> dict:
    """Logical timestamps back to the raw longs the JVM's GenericRecord holds."""
    return {k: (v - EPOCH) // __import__("datetime").timedelta(microseconds=1) if isinstance(v, datetime) else v
            for k, v in record.items()}


@pytest.mark.integration
async def test_downstream_apps_read_every_topic_through_the_registry(tmp_path, local_registry, jvm_classpath) -> None:
    names = Names()
    framing = ["--avro-framing", "registry", "--schema-registry-url", local_registry]
    bridge = start_bridge(names, amqp_url=AMQP_URL, bootstrap=KAFKA, partitions=3,
                          extra=[*framing, "--heartbeat-interval", "1"])
    worker = start_worker(names, bootstrap=KAFKA, partitions=3, data_dir=str(tmp_path / "worker"), extra=framing)
    outputs = [f"{names.output_prefix}{t}" for t in ("operations", "node-state", "alerts")]
    try:
        await bridge.wait_for("relaying from", 90)
        truth = tmp_path / "truth.json"
        simulate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "simulate", "--output", "rabbit", "--amqp-url", AMQP_URL,
            "--nodes", "40", "--images", "8", "--events", "500", "--rate", "0", "--seed", "16",
            "--loss", "0.05", "--truth", str(truth),
            "--ironic-topic", names.ironic_topic, "--glance-topic", names.glance_topic, "--quiet",
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(simulate.communicate(), 120)
        assert simulate.returncode == 0, err.decode()[-2000:]
        sent = json.loads(truth.read_text())["summary"]["events_sent"]

        deadletter = f"{names.topic_prefix}deadletter"
        relay = [t for t in await _topics((names.topic_prefix,)) if t != deadletter]
        assert await _settled(relay, sent, 90, count=_notifications) == sent
        assert worker.alive() and bridge.alive(), worker.tail() + bridge.tail()
        # the bridge writes heartbeats for as long as it runs: stopped, the topics hold still for a snapshot
        assert await bridge.stop() == 0, bridge.tail()
        await _settled(relay + outputs, sent, 90)
        assert worker.alive(), worker.tail()

        written = await _raw_records(relay + outputs)
        per_topic = {t: sum(1 for k in written if k[0] == t) for t in outputs}
        assert all(per_topic.values()), f"an output topic is empty: {per_topic}"
        heartbeats = sum(1 for k, (_, headers) in written.items() if k[0] in relay and _is_heartbeat(headers))
        assert sum(1 for k in written if k[0] in relay) - heartbeats == sent
        assert heartbeats, "the bridge wrote no heartbeat: the downstream apps did not read one"

        # the pipeline's own reading of what it wrote; every value and header says registry framing
        ids = codec.SchemaIds(fetch=registry.Registry(local_registry).schema_text)
        codec_ids, codec.IDS = codec.IDS, ids
        try:
            ours = {k: codec.decode_value(value) for k, (value, _) in written.items()}
        finally:
            codec.IDS = codec_ids
        for value, headers in written.values():
            schema_id = int.from_bytes(value[1:5], "big")
            assert value[0] == 0 and headers["content-type"].endswith(f"framing=registry; id={schema_id}".encode())

        # 2. the Python REST consumer
        rest = RestConsumer(local_registry)
        assert {k: rest.decode(value) for k, (value, _) in written.items()} == ours
        assert 1 <= rest.fetched <= 4  # one id per schema: ids are content ids, shared by subjects

        # 1. the JVM consumer
        java = await asyncio.create_subprocess_exec(
            "java", "-Xmx256m", "-cp", jvm_classpath, str(CONSUMER / "RegistryConsumer.java"), KAFKA, APICURIO_V3,
            *relay, *outputs, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(java.communicate(), 240)
        assert java.returncode == 0, err.decode()[-3000:]
        jvm = {}
        for line in out.splitlines():
            row = orjson.loads(line)
            jvm[(row["topic"], row["partition"], row["offset"])] = row["value"]
        assert jvm.keys() == written.keys()
        mismatched = [k for k in written if jvm[k] != _plain(ours[k])]
        assert not mismatched, f"{len(mismatched)} records differ, e.g. {mismatched[0]}: {jvm[mismatched[0]]} != {ours[mismatched[0]]}"
        print(f"registry framing: {len(written)} records ({sent} relayed and {heartbeats} heartbeats in {len(relay)} topics, "
              f"outputs {per_topic}) "
              f"decoded alike by the JVM and the REST consumer; {rest.fetched} schema ids fetched")

        # 3. an incompatible change (a field added without a default) is refused in one line
        changed = tmp_path / "avro"
        shutil.copytree(codec.avro_dir(), changed)
        schema = orjson.loads((changed / "operation.avsc").read_bytes())
        schema["fields"].append({"name": "zone", "type": "string"})
        (changed / "operation.avsc").write_bytes(orjson.dumps(schema))
        refused = subprocess.run(
            [sys.executable, "-m", "pipeline", "worker", "--kafka-bootstrap-servers", KAFKA, "--no-web",
             "--topic-prefix", names.topic_prefix, "--output-prefix", names.output_prefix, *framing],
            env={**os.environ, "PIPELINE_AVRO_DIR": str(changed)}, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2, refused.stderr[-2000:]
        line = refused.stderr.strip().splitlines()[-1]
        assert line.startswith("pipeline worker: error: schema registry") and "refused schema 'operation'" in line
        assert f"{names.output_prefix}operations-value" in line and "409" in line and "Traceback" not in refused.stderr
    finally:
        for proc in (bridge, worker):
            await proc.stop()
            proc.cleanup()
        await delete_queues(AMQP_URL, [names.queue, *names.oslo_default_queues()])
        await delete_topics(KAFKA, [f"bench-{names.run}.", names.app_id])
        _delete_subjects(local_registry, names.run)


@pytest.mark.integration
async def test_a_registry_down_at_start_is_waited_for(tmp_path) -> None:
    """The bridge starts before its registry (a private Apicurio on a free port): it waits, saying
    so, and relays once the registry is up, with ids from that registry."""
    stack = PrivateStack(tmp_path / "stack", "registry-wait")
    url = f"http://127.0.0.1:{stack.registry_port}/apis/ccompat/v7"
    names = Names()
    bodies = ROOT / "tests" / "fixtures" / "research_bodies.jsonl"
    bridge = Proc("bridge", ["bridge", "--source", f"file:{bodies}", "--kafka-bootstrap-servers", KAFKA,
                             "--topic-prefix", names.topic_prefix, "--topic-partitions", "1", "--metrics-port", "0",
                             "--avro-framing", "registry", "--schema-registry-url", url])
    try:
        deadline = time.monotonic() + 30
        while bridge.text().count("not reachable") < 2 and time.monotonic() < deadline:
            assert bridge.alive(), bridge.tail()
            await asyncio.sleep(0.2)
        assert bridge.text().count("not reachable") >= 2 and bridge.alive(), bridge.tail()
        assert "relaying from" not in bridge.text()
        await asyncio.to_thread(stack.start, "registry")
        assert await bridge.exited(90) == 0, bridge.tail()
        log = bridge.text()
        assert "reachable again" in log and "stopped: 6 relayed, 0 dead-lettered" in log, bridge.tail()
        relay = await _topics((names.topic_prefix,))
        written = await _raw_records(relay)
        rest = RestConsumer(url)
        assert len(written) == 6 and all(rest.decode(value)["message_id"] for value, _ in written.values())
    finally:
        await bridge.stop()
        await asyncio.to_thread(stack.stop, "registry")
        await delete_topics(KAFKA, [f"bench-{names.run}."])
        bridge.cleanup()
