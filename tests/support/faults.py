"""The fault suite's harness: one input (the simulator's capture), the whole pipeline as
subprocesses on a broker pair, and the read-back that turns Kafka's topics into sets to compare.

Accounting is by message_id: every id the input holds must be in a relay topic (at least once) or
in the dead-letter topic. Derived outputs are compared by their deterministic ids (operations:
`op_id`, alerts: `alert_id`) and by the final record per node of the compacted node-state topic.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline import codec
from pipeline.bench.procs import (
    Names,
    Proc,
    delete_queues,
    proc_status_mb,
    start_bridge,
    start_worker,
)
from pipeline.streams.topics import Topics

ROOT = Path(__file__).resolve().parents[2]

# One fleet for every scenario: the same seed, start and size give the same bodies and message_ids.
# PYTHONHASHSEED: the simulator picks a Glance publisher with hash(event_type) (see the report).
SIM_ENV = {"PYTHONHASHSEED": "0"}
SIM_ARGS = ["--seed", "11", "--nodes", "300", "--images", "30", "--think", "120",
            "--events", "2000", "--start", "2026-11-22 00:00:00", "--quiet"]
PARTITIONS = 3
# The watchdog keeps one watermark per partition *number*, shared by every relay topic, and faust
# reads the topics at different paces, so alerts depend on how far one topic ran ahead of another
# (see the report: a backlog alone raises hundreds of false missing_end). A lateness longer than the
# fleet's whole event time keeps the watermark from passing any deadline, so operations and node
# states can be compared exactly; alerts are then none in every run (checked, not assumed).
WORKER_ARGS = ("--lateness", "259200")
# The fleet's event times are a fixed past (same bodies in every run), so a bridge vouching for its
# wall clock would pass every deadline at once: no heartbeats here. tests/integration/test_idle_lanes.py
# tests them, with notifications timestamped now as OpenStack's are.
BRIDGE_ARGS = ("--heartbeat-interval", "0")


@dataclass(frozen=True)
class Broker:
    """Where a scenario runs: the private stack's ports (tests that stop a broker) or the shared ones."""

    kafka: str
    amqp_url: str
    rabbit_node: str | None = None  # for rabbitmqctl -n: only ever the private node


def simulate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "pipeline", "simulate", *SIM_ARGS, *args],
                          cwd=ROOT, env={**os.environ, **SIM_ENV}, capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done


def capture(path: Path) -> list[str]:
    """The fleet's notifications as capture lines in `path`; returns their message_ids in order."""
    done = simulate("--output", "stdout", "--capture", "--rate", "0")
    path.write_bytes(done.stdout)
    return [message_id_of(json.loads(line)["body"]) for line in done.stdout.splitlines() if line.strip()]


def message_id_of(body: bytes | str) -> str | None:
    """The message_id of an AMQP body (messagingv2 envelope or bare dict), None when it has none."""
    try:
        obj = orjson.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("oslo.message"), str):
            obj = orjson.loads(obj["oslo.message"])
        value = obj.get("message_id") if isinstance(obj, dict) else None
        return value if isinstance(value, str) else None
    except (orjson.JSONDecodeError, TypeError):
        return None


# --- the pipeline as subprocesses ---------------------------------------------------------------------


@dataclass
class Pipeline:
    """One scenario's bridge(s) and worker(s) on its own queue, topics and consumer group."""

    broker: Broker
    data_dir: Path
    names: Names = field(default_factory=Names)
    bridge_extra: tuple[str, ...] = ()
    procs: list[Proc] = field(default_factory=list)
    bridges_started: int = 0
    workers_started: int = 0

    def bridge(self, *extra: str) -> Proc:
        proc = start_bridge(self.names, amqp_url=self.broker.amqp_url, bootstrap=self.broker.kafka,
                            partitions=PARTITIONS, extra=[*BRIDGE_ARGS, *self.bridge_extra, *extra])
        self.procs.append(proc)
        self.bridges_started += 1
        return proc

    def worker(self, *extra: str, web_port: int | None = None) -> Proc:
        self.workers_started += 1
        proc = start_worker(self.names, bootstrap=self.broker.kafka, partitions=PARTITIONS,
                            data_dir=str(self.data_dir / f"worker-{self.workers_started}"),
                            web_port=web_port, extra=["--loglevel", "info", *WORKER_ARGS, *extra])
        self.procs.append(proc)
        return proc

    def publish(self, rate: float) -> subprocess.Popen:
        """The fleet through oslo.messaging's rabbit driver into this scenario's exchanges/topics."""
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "simulate", *SIM_ARGS, "--output", "rabbit",
             "--amqp-url", self.broker.amqp_url, "--rate", str(rate),
             "--ironic-topic", self.names.ironic_topic, "--glance-topic", self.names.glance_topic],
            cwd=ROOT, env={**os.environ, **SIM_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def stop(self) -> None:
        for proc in self.procs:
            await proc.stop()

    def logs(self) -> str:
        return "\n".join(p.text() for p in self.procs)

    def crashed(self) -> list[str]:
        """Tracebacks in any process's log: a fault may kill a process, never make it crash."""
        return [p.tail(30) for p in self.procs if "Traceback (most recent call last)" in p.text()]

    async def cleanup(self) -> None:
        for i, proc in enumerate(self.procs):  # the logs stay beside the test's data for a post-mortem
            shutil.copyfile(proc.log, self.data_dir / f"{i:02d}-{proc.name}-{proc.pid}.log")
            proc.cleanup()
        try:
            await delete_queues(self.broker.amqp_url, [self.names.queue, *self.names.oslo_default_queues()])
        except Exception:  # noqa: BLE001 - a broker down at the end of a failed test: nothing to clean
            pass


def publish_done(pub: subprocess.Popen, timeout: float = 120) -> str:
    _, err = pub.communicate(timeout=timeout)
    text = err.decode(errors="replace")
    assert pub.returncode == 0, f"simulate exited {pub.returncode}: {text[-1500:]}"
    return text


# --- reading Kafka back -------------------------------------------------------------------------------


async def _client(kafka: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.split(","), enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=20000)
    await consumer.start()
    return consumer


async def _partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    # consumer.topics() fetches the metadata but does not keep it: ask the cluster object it returns
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]


async def _stop(consumer: AIOKafkaConsumer) -> None:
    await asyncio.sleep(0)  # aiokafka 0.14 awaits a task it cancelled; it must have started first
    await consumer.stop()


async def topics_starting(kafka: str, *prefixes: str) -> list[str]:
    consumer = await _client(kafka)
    try:
        return sorted(t for t in await consumer.topics() if t.startswith(prefixes))
    finally:
        await _stop(consumer)


async def read_topics(kafka: str, topics: Iterable[str]) -> dict[str, list]:
    """Every record of `topics` up to their current end offsets, in partition order."""
    consumer = await _client(kafka)
    out: dict[str, list] = collections.defaultdict(list)
    try:
        tps = await _partitions(consumer, topics)
        if not tps:
            return out
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=10000)
            for tp, records in batch.items():
                out[tp.topic].extend(records)
                if records and records[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        assert not pending, f"could not read {pending} to its end"
    finally:
        await _stop(consumer)
    return out


async def group_lag(kafka: str, group: str, topics: Iterable[str]) -> int | None:
    """Records of `topics` not yet committed by `group`; None until the group committed at all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.split(","), request_timeout_ms=10000)
    consumer = await _client(kafka)
    try:
        await admin.start()
        tps = await _partitions(consumer, topics)
        ends = await consumer.end_offsets(tps) if tps else {}
        committed = await admin.list_consumer_group_offsets(group)
        if not committed:
            return None
    except KafkaError:  # e.g. the group coordinator not ready yet on a fresh or restarted Kafka
        return None
    else:
        return sum(end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
                   for tp, end in ends.items())
    finally:
        await admin.close()
        await _stop(consumer)


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return value
    return None


@dataclass
class Accounting:
    published: int
    relayed_records: int
    relayed_ids: int
    deadlettered: int
    duplicates: int  # relay records beyond the first per message_id
    missing: list[str]

    def line(self) -> str:
        return (f"published {self.published}, relayed {self.relayed_ids} ids in {self.relayed_records} records "
                f"({self.duplicates} duplicates), dead-lettered {self.deadlettered}, missing {len(self.missing)}")


async def account(kafka: str, prefix: str, published: list[str], timeout: float = 90) -> Accounting:
    """Wait until every published message_id is in a relay topic or dead-lettered (or `timeout`)."""
    wanted = set(published)
    deadline = time.monotonic() + timeout
    while True:
        topics = await topics_starting(kafka, prefix)
        records = await read_topics(kafka, topics)
        relay_ids: collections.Counter = collections.Counter()
        dead: set[str] = set()
        n_relay = 0
        for topic, recs in records.items():
            for rec in recs:
                if topic == f"{prefix}deadletter":
                    assert header(rec, "reason"), f"a dead letter without a reason: {rec.value[:200]!r}"
                    dead.add(message_id_of(rec.value) or f"<dead {rec.offset}>")
                else:
                    n_relay += 1
                    relay_ids[header(rec, "message_id").decode()] += 1
        missing = sorted(wanted - set(relay_ids) - dead)
        if not missing or time.monotonic() > deadline:
            return Accounting(len(wanted), n_relay, len(set(relay_ids) & wanted), len(dead & wanted),
                              sum(c - 1 for c in relay_ids.values()), missing)
        await asyncio.sleep(2)


@dataclass
class Derived:
    operations: dict[str, dict]  # op_id -> record
    alerts: dict[str, dict]  # alert_id -> record
    nodes: dict[str, dict]  # node uuid -> its last node-state record
    duplicate_ids: dict[str, int]  # output kind -> records repeating an id already seen
    records: dict[str, int]

    def summary(self) -> str:
        kinds = collections.Counter(a["kind"] for a in self.alerts.values())
        return (f"{len(self.operations)} operations, {len(self.nodes)} nodes, alerts {dict(kinds)}, "
                f"raw records {self.records}, repeated ids {self.duplicate_ids}")


async def derived(kafka: str, output_prefix: str) -> Derived:
    names = {"operation": f"{output_prefix}operations", "alert": f"{output_prefix}alerts",
             "node_state": f"{output_prefix}node-state"}
    records = await read_topics(kafka, names.values())
    ops: dict[str, dict] = {}
    alerts: dict[str, dict] = {}
    nodes: dict[str, dict] = {}
    dups: collections.Counter = collections.Counter()
    counts = {}
    for kind, topic in names.items():
        seen: set[bytes] = set()
        counts[kind] = len(records.get(topic, ()))
        for rec in records.get(topic, ()):
            rid = header(rec, "id")
            if rid in seen:
                dups[kind] += 1
            seen.add(rid)
            value = codec.decode_value(rec.value)
            if kind == "operation":
                ops[value["op_id"]] = value
            elif kind == "alert":
                alerts[value["alert_id"]] = value
            else:
                nodes[rec.key.decode()] = value
    return Derived(ops, alerts, nodes, dict(dups), counts)


async def caught_up(pipeline: Pipeline, timeout: float = 120, quiet_s: float = 3.0) -> None:
    """Until the worker group committed every relay record and the outputs stopped growing."""
    kafka, names = pipeline.broker.kafka, pipeline.names
    sources = Topics.named(names.topic_prefix, names.output_prefix).sources  # what the worker reads
    outputs = await topics_starting(kafka, names.output_prefix)
    deadline = time.monotonic() + timeout
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        lag = await group_lag(kafka, names.app_id, sources)
        ends = await _end_offsets(kafka, outputs)
        if lag == 0 and ends == last:
            if time.monotonic() - still_since >= quiet_s:
                return
        else:
            last, still_since = ends, time.monotonic()
        await asyncio.sleep(1)
    workers = [p for p in pipeline.procs if p.name == "worker"]
    raise AssertionError(f"worker group {names.app_id} did not catch up in {timeout:.0f}s (lag {lag}); "
                         f"logs in {pipeline.data_dir}; last worker: {workers[-1].tail(10)}")


async def _end_offsets(kafka: str, topics: list[str]) -> dict:
    consumer = await _client(kafka)
    try:
        tps = await _partitions(consumer, topics)
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await _stop(consumer)


def compare(reference: Derived, got: Derived) -> list[str]:
    """What differs between a fault-free run and a faulted one (empty: equal)."""
    problems = []
    for what in ("operations", "alerts", "nodes"):
        ref, new = getattr(reference, what), getattr(got, what)
        missing = sorted(set(ref) - set(new))
        extra = sorted(set(new) - set(ref))
        changed = sorted(k for k in set(ref) & set(new) if ref[k] != new[k])
        if missing or extra or changed:
            sample = {"missing": [ref[k] for k in missing[:2]], "extra": [new[k] for k in extra[:2]],
                      "changed": [(ref[k], new[k]) for k in changed[:2]]}
            problems.append(f"{what}: {len(missing)} missing, {len(extra)} extra, {len(changed)} changed; "
                            f"e.g. {sample}")
    return problems


class RssSampler:
    """The bridge's resident memory, from /proc/<pid>/status, sampled while a fault lasts."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []

    def sample(self) -> None:
        rss = proc_status_mb(self.pid, "VmRSS")
        if rss is not None:
            self.samples.append(rss)

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)


# --- one scenario ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    accounting: Accounting
    derived: Derived
    differences: list[str]
    crashed: list[str]
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self, name: str) -> str:
        extra = "".join(f"; {k} {v}" for k, v in self.notes.items())
        return f"{name}: {self.accounting.line()}; derived {self.derived.summary()}{extra}"

    def check(self) -> None:
        acc = self.accounting
        assert not acc.missing, f"{len(acc.missing)} notifications neither relayed nor dead-lettered, " \
                                f"e.g. {acc.missing[:5]}"
        assert not self.crashed, "a process crashed:\n" + "\n---\n".join(self.crashed)
        assert not self.differences, "derived outputs differ from the fault-free run:\n" + "\n".join(self.differences)


async def scenario(broker: Broker, data_dir: Path, published: list[str], reference: Derived, fault,
                   *, rate: float = 250, bridge_extra: tuple[str, ...] = (), timeout: float = 150) -> Outcome:
    """Bridge and worker up, the fleet published at `rate` while `fault(pipeline, publisher)` runs;
    then the read-back: accounting by message_id and the derived outputs against `reference`."""
    p = Pipeline(broker, data_dir, bridge_extra=bridge_extra)
    notes: dict[str, Any] = {}
    try:
        bridge = p.bridge()
        await bridge.wait_for("relaying from", 60)
        await p.worker().wait_for("Ready", 90)  # faults start on a running pipeline
        pub = p.publish(rate)
        notes.update(await asyncio.wait_for(fault(p, pub), timeout) or {})
        await asyncio.to_thread(publish_done, pub)
        acc = await account(broker.kafka, p.names.topic_prefix, published)
        await caught_up(p)
        got = await derived(broker.kafka, p.names.output_prefix)
        crashed = p.crashed()
        alive = [f"{proc.name} {proc.pid}" for proc in p.procs if not proc.alive() and proc.popen.returncode not in (0, -9, -15)]
        if alive:
            crashed.append(f"exited with an error: {alive}: {p.logs()[-3000:]}")
        return Outcome(acc, got, compare(reference, got), crashed, notes)
    finally:
        await p.stop()
        await p.cleanup()


def running(procs: list[Proc], name: str) -> list[Proc]:
    alive = [proc for proc in procs if proc.name == name and proc.alive()]
    assert alive, f"no {name} running any more: " + " / ".join(p.tail(12) for p in procs if p.name == name)
    return alive


async def sigkill(proc: Proc) -> None:
    import signal

    os.kill(proc.pid, signal.SIGKILL)
    while proc.alive():
        await asyncio.sleep(0.05)
