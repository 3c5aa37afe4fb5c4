"""Fresh workers started again and again on a loaded machine: the harness of
tests/faults/test_fresh_starts.py.

Each start is what a new user does: a worker on a new app id and new topics (RocksDB tables, an
empty data dir), the relay topics created by the bridge's own topic creation at about the same
moment (a random delay within the worker's start-up), a node's ``create.start`` and, 50 ms later,
its ``create.end``. The worker must publish the operation within `first_operation_s` and stop on
SIGTERM within `grace_s`. A worker that does not is a stall: its thread stacks (faulthandler) and
asyncio task stacks (both on SIGUSR1), its CPU time and its log tail are kept for the report.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.bench.procs import Names, Proc, RecordCounter, delete_topics, start_worker
from pipeline.bridge.routing import catalog_topics
from tests.support import scripted

PARTITIONS = 6


@dataclass
class Start:
    """What one fresh start did."""

    index: int
    bridge_delay_s: float  # the relay topics were created this long after the worker was started
    first_operation_s: float | None = None  # from the worker's start to its first operation; None: never
    stop_s: float | None = None  # from SIGTERM to the exit; None: it had to be killed
    exit_code: int | None = None
    cpu_s: float | None = None  # the worker's CPU seconds when the wait for its operation ended
    report: str = ""  # on a stall: the worker's log tail, its stacks included
    stuck_cores: float | None = None  # cores a worker that did not stop used meanwhile
    missing_topics: int = 0  # "Ignoring missing topic" lines: faust's assignment met a topic not yet known
    false_alarms: int = 0  # "did not stop cleanly" lines: a first start on an empty data dir has none to give

    @property
    def stalled(self) -> bool:
        return self.first_operation_s is None

    def line(self) -> str:
        first = "STALLED" if self.first_operation_s is None else f"first operation {self.first_operation_s:.1f} s"
        stop = "KILLED" if self.stop_s is None else f"stopped {self.stop_s:.1f} s after SIGTERM (exit {self.exit_code})"
        stuck = "" if self.stuck_cores is None else f", {self.stuck_cores} cores used while not stopping"
        return (f"start {self.index}: bridge topics at +{self.bridge_delay_s:.2f} s, {first} (cpu {self.cpu_s} s), "
                f"{stop}{stuck}, 'Ignoring missing topic' x{self.missing_topics}")


@dataclass
class Burner:
    """Busy loops, one per core: the machine loaded as in the reported run (load about 4 on 2 cores)."""

    count: int = field(default_factory=lambda: os.cpu_count() or 2)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __enter__(self) -> Burner:
        for _ in range(self.count):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


async def _bridge_topics(kafka: str, prefix: str) -> None:
    """The relay topics, created as the bridge creates them at its start (every catalog family)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        # the answer may say some already exist (the worker created them first): that is the race
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in catalog_topics(prefix)])
    finally:
        await admin.close()


async def relay_create(kafka: str, prefix: str) -> None:
    """A node's create.start and, 50 ms later, its create.end, as the bridge relays them."""
    node = str(uuid.uuid4())
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True)
    await producer.start()
    try:
        for i, event_type in enumerate(("baremetal.node.create.start", "baremetal.node.create.end")):
            if i:
                await asyncio.sleep(0.05)
            body = scripted.ironic_body(event_type, node, now + timedelta(seconds=i), provision_state="enroll")
            topic, key, value, headers = scripted.relay(scripted.normalized(body, prefix))
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _first_operation(kafka: str, topic: str, proc: Proc, bound_s: float, started: float) -> float | None:
    async with RecordCounter(kafka, [topic]) as counter:
        while time.monotonic() - started < bound_s:
            if not proc.alive():
                return None
            try:
                if await counter.count() > 0:
                    return time.monotonic() - started
            except Exception:  # noqa: BLE001 - the topic may not exist yet
                pass
            await asyncio.sleep(0.25)
    return None


async def _stacks(proc: Proc) -> None:
    """SIGUSR1: the worker writes every thread's stack (faulthandler, even with its event loop
    blocked) and every asyncio task's stack (when its loop turns) to its log."""
    if proc.alive():
        proc.popen.send_signal(signal.SIGUSR1)
        await asyncio.sleep(3.0)


async def _stop(proc: Proc, grace_s: float) -> tuple[float | None, int | None, float | None]:
    """SIGTERM; (seconds to the exit or None when it had to be killed, exit status, the cores a
    worker that did not stop used meanwhile)."""
    if not proc.alive():
        return 0.0, proc.popen.returncode, None
    sent = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    while proc.alive() and time.monotonic() - sent < grace_s:
        await asyncio.sleep(0.1)
    if proc.alive():
        await _stacks(proc)  # what it is stuck on, before it is killed
        cpu = proc.cpu_seconds()
        await asyncio.sleep(5.0)
        cores = ((proc.cpu_seconds() or 0.0) - (cpu or 0.0)) / 5.0  # busy or waiting?
        proc.popen.kill()
        proc.popen.wait()
        return None, proc.popen.returncode, round(cores, 2)
    return time.monotonic() - sent, proc.popen.returncode, None


async def one_start(kafka: str, data_dir: Path, index: int, rng: random.Random, *,
                    first_operation_s: float, grace_s: float, worker_extra: tuple[str, ...] = ()) -> Start:
    names = Names()
    delay = rng.uniform(0.0, 4.0)  # the worker's start-up (imports, its own topic creation, faust) spans this
    started = time.monotonic()
    proc = start_worker(names, bootstrap=kafka, partitions=PARTITIONS, data_dir=str(data_dir / names.run),
                        store="rocksdb://", extra=["--loglevel", "info", *worker_extra])
    result = Start(index, delay)
    try:
        await asyncio.sleep(delay)
        await _bridge_topics(kafka, names.topic_prefix)
        await relay_create(kafka, names.topic_prefix)
        result.first_operation_s = await _first_operation(kafka, f"{names.output_prefix}operations", proc,
                                                          first_operation_s, started)
        result.cpu_s = proc.cpu_seconds()
        if result.stalled:
            await _stacks(proc)
        result.stop_s, result.exit_code, result.stuck_cores = await _stop(proc, grace_s)
        log = proc.text()
        result.missing_topics = log.count("Ignoring missing topic")
        result.false_alarms = log.count("did not stop cleanly")
        if os.environ.get("FRESH_STARTS_LOGS"):
            Path(os.environ["FRESH_STARTS_LOGS"], f"{index:03d}-{names.run}.log").write_text(log)
        if result.stalled or result.stop_s is None:
            result.report = f"--- worker of start {index} ({names.app_id}), log tail:\n" + \
                "\n".join(proc.text().splitlines()[-400:])
    finally:
        if proc.alive():
            proc.popen.kill()
            proc.popen.wait()
        proc.cleanup()
        await delete_topics(kafka, [f"bench-{names.run}.", names.app_id])
    return result


async def run_starts(kafka: str, data_dir: Path, starts: int, parallel: int, seed: int, *,
                     first_operation_s: float, grace_s: float, progress=print,
                     worker_extra: tuple[str, ...] = ()) -> list[Start]:
    """`starts` fresh starts, `parallel` at a time; `progress` gets one line per start."""
    rng = random.Random(seed)
    results: list[Start] = []
    queue = list(range(starts))

    async def lane() -> None:
        while queue:
            index = queue.pop(0)
            start = await one_start(kafka, data_dir, index, rng, first_operation_s=first_operation_s,
                                    grace_s=grace_s, worker_extra=worker_extra)
            results.append(start)
            progress(start.line())

    await asyncio.gather(*(lane() for _ in range(parallel)))
    return sorted(results, key=lambda s: s.index)
