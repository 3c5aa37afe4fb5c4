"""The idle-lane scenarios (tests/integration/test_idle_lanes.py, tests/faults/test_idle_lanes_kafka.py):
power_set operations published through oslo.messaging's Notifier with wall-clock timestamps, the
bridge(s) and a worker as processes, and the alerts and operations read back from Kafka.

Node UUIDs are picked by partition, so a test knows which partitions get no event after a start:
there only the bridges' heartbeats can move the clock."""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import codec
from pipeline.bench.procs import Names, Proc, delete_queues, delete_topics, start_bridge, start_worker
from pipeline.bridge.sink import java_partition

from .oslo_rabbit import OsloPublisher, power_set_payload

POWER = "baremetal.node.power_set"
DEADLINE_S = 20.0
LATENESS_S = 5.0
PARTITIONS = 3
WORKER_ARGS = ("--deadline", f"{POWER}={DEADLINE_S:g}", "--lateness", f"{LATENESS_S:g}", "--loglevel", "info")
# heartbeats (5 s) on every lane for the worker's warm-up (3 intervals), so the clock moves from there
WARM_S = 17.0


def nodes_on(partition: int, count: int, partitions: int = PARTITIONS) -> list[str]:
    out = []
    while len(out) < count:
        node = str(uuid.uuid4())
        if java_partition(node.encode(), partitions) == partition:
            out.append(node)
    return out


@dataclass
class Lanes:
    """One scenario's queue, topics, processes and publisher on a broker pair."""

    kafka: str
    amqp_url: str
    data_dir: str
    names: Names = field(default_factory=Names)
    procs: list[Proc] = field(default_factory=list)
    _publisher: OsloPublisher | None = None

    def bridge(self, *extra: str) -> Proc:
        proc = start_bridge(self.names, amqp_url=self.amqp_url, bootstrap=self.kafka, partitions=PARTITIONS,
                            extra=extra)
        self.procs.append(proc)
        return proc

    web_port: int | None = None  # the worker's web views, when a test reads them

    def worker(self, *extra: str) -> Proc:
        proc = start_worker(self.names, bootstrap=self.kafka, partitions=PARTITIONS, data_dir=self.data_dir,
                            web_port=self.web_port,
                            extra=[*WORKER_ARGS, "--group-instance-id", f"lanes-{self.names.run}", *extra])
        self.procs.append(proc)
        return proc

    def publisher(self) -> OsloPublisher:
        if self._publisher is None:
            self._publisher = OsloPublisher("ironic", url=self.amqp_url.replace("amqp://", "rabbit://"),
                                            topic=self.names.ironic_topic)
        return self._publisher

    def publish(self, phase: str, nodes: list[str], event: str = POWER) -> float:
        """`event.phase` for each node (timestamped now by oslo); returns the wall time before."""
        before = time.time()
        pub = self.publisher()
        for node in nodes:
            pub.publish(f"{event}.{phase}", power_set_payload(node))
        return before

    async def stop(self) -> None:
        for proc in self.procs:
            await proc.stop()
        if self._publisher is not None:
            self._publisher.close()

    async def cleanup(self) -> None:
        for proc in self.procs:
            proc.cleanup()
        try:
            await delete_queues(self.amqp_url, [self.names.queue, *self.names.oslo_default_queues()])
            await delete_topics(self.kafka, [f"bench-{self.names.run}."])
        except Exception:  # noqa: BLE001 - a broker down at the end of a failed test: nothing to clean
            pass

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} {p.pid}\n{p.tail(25)}" for p in self.procs)


@dataclass
class Outputs:
    alerts: list[tuple[dict, float]]  # (alert, Kafka timestamp in s)
    operations: list[dict]

    def alerts_of(self, kind: str) -> list[tuple[dict, float]]:
        return [(a, at) for a, at in self.alerts if a["kind"] == kind]


async def read_outputs(kafka: str, names: Names) -> Outputs:
    """Every alert and operation record written so far."""
    topics = [f"{names.output_prefix}alerts", f"{names.output_prefix}operations"]
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.split(","), enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=20000)
    await consumer.start()
    out = Outputs([], [])
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
        if not tps:
            return out
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp]}
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, recs in batch.items():
                for rec in recs:
                    value = codec.decode_value(rec.value)
                    if tp.topic.endswith("alerts"):
                        out.alerts.append((value, rec.timestamp / 1000))
                    else:
                        out.operations.append(value)
                if recs and recs[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
    finally:
        await asyncio.sleep(0)
        await consumer.stop()
    return out


async def wait_outputs(kafka: str, names: Names, done, timeout: float, every: float = 2.0) -> Outputs:
    """Read the outputs until `done(outputs)` or `timeout`; the last read either way."""
    deadline = time.monotonic() + timeout
    while True:
        out = await read_outputs(kafka, names)
        if done(out) or time.monotonic() > deadline:
            return out
        await asyncio.sleep(every)


async def running(lanes: Lanes, bridges: int = 1, *bridge_args: str) -> None:
    started = [lanes.bridge("--bridge-id", f"b{i}-{lanes.names.run}", *bridge_args) for i in range(bridges)]
    for bridge in started:
        await bridge.wait_for("relaying from", 60)
    await lanes.worker().wait_for("Ready", 90)


async def no_false_alarm(lanes: Lanes, outage) -> str:
    """Six operations (start and end) and one lost end (the canary) published during `outage`;
    afterwards: the six operations, no alert for them, and the canary flagged (the clock moved again)."""
    six, canary = nodes_on(0, 2) + nodes_on(1, 2) + nodes_on(2, 2), nodes_on(0, 1)
    await asyncio.sleep(WARM_S)  # the clock runs on heartbeats before the outage
    began = time.monotonic()

    async def publish() -> None:
        lanes.publish("start", six + canary)
        await asyncio.sleep(1.0)

    async def ends() -> None:
        lanes.publish("end", six)

    notes = await outage(publish, ends)
    out = await wait_outputs(lanes.kafka, lanes.names,
                             lambda o: len(o.operations) >= 6 and o.alerts_of("missing_end"), timeout=90)
    await asyncio.sleep(12.0)  # heartbeats of the bridge caught up again: any false alarm would show now
    out = await read_outputs(lanes.kafka, lanes.names)
    assert sorted(op["resource_uuid"] for op in out.operations) == sorted(six), lanes.logs()
    flagged = [a["resource_uuid"] for a, _ in out.alerts_of("missing_end")]
    assert flagged == canary, f"missing_end for {flagged}, expected only the canary {canary}\n{lanes.logs()}"
    assert not out.alerts_of("resolved_late"), out.alerts
    return (f"{notes}; {len(out.operations)} operations, missing_end {len(flagged)} (the canary only), "
            f"resolved_late 0, {time.monotonic() - began:.0f} s")
