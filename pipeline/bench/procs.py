"""Bridge and worker as subprocesses (`python -m pipeline bridge|worker ...`), their memory read
from /proc, and the broker housekeeping a run needs (queues to delete, records to count).

Shared by `pipeline bench` and the end-to-end tests: each run gets its own queue, topic prefix,
output prefix and app id, so parallel runs never see each other's records.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CpuShare", "Names", "Proc", "RecordCounter", "count_records", "delete_queues", "delete_topics",
           "end_run", "machine_cpu_seconds", "proc_cpu_seconds", "tree_env",
           "proc_status_mb", "start_bridge", "start_worker"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status_mb(pid: int, key: str) -> float | None:
    """A memory line of /proc/<pid>/status in MB (VmRSS now, VmHWM the peak), None once it exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _proc_stat(pid: int | str) -> tuple[str, float] | None:
    """(command name, CPU seconds: user + system, all threads) of a process, None once it exited."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    head, _, tail = text.rpartition(")")  # the command name may hold spaces and parentheses
    fields = tail.split()
    return head.partition("(")[2], (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (14, 15)


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far, None once it exited."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, busy + idle) CPU seconds of the whole machine since boot, summed over its cores
    (the first line of /proc/stat; a guest's time is already in user and nice)."""
    with open("/proc/stat") as stat:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy / _CLOCK_TICKS, (busy + idle + iowait) / _CLOCK_TICKS


def _all_cpu_seconds() -> dict[int, tuple[str, float]]:
    """{pid: (command name, CPU seconds so far)} of every process we may read."""
    stats = {int(entry.name): _proc_stat(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()}
    return {pid: stat for pid, stat in stats.items() if stat is not None}


class CpuShare:
    """Where the machine's CPU went over a window: the share of all its cores that was busy, the
    cores each named process used, and the processes that used the most. A latency missed while
    the machine was busy on every core was a lack of CPU, not a wait the code could shorten."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start = time.monotonic(), machine_cpu_seconds(), _all_cpu_seconds()

    def figures(self, top: int = 6) -> dict[str, Any]:
        """{"machine_busy": 0..1, "<name>_cores": cores that process used, "cores_by_process":
        {"<command name> <pid>" (or a name of `pids`): cores} of the `top` busiest} since the start."""
        (t0, (busy0, total0), procs0), t1 = self._start, time.monotonic()
        busy1, total1 = machine_cpu_seconds()
        procs1 = _all_cpu_seconds()
        seconds = t1 - t0
        named = {pid: name for name, pid in self.pids.items()}
        used = {pid: (procs1[pid][1] - procs0[pid][1]) / seconds
                for pid in procs1.keys() & procs0.keys() if seconds > 0}
        out: dict[str, Any] = {
            "machine_busy": round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else None}
        for name, pid in self.pids.items():
            out[f"{name}_cores"] = round(used[pid], 4) if pid in used else None  # idle: tenths of a percent
        busiest = sorted(used, key=used.__getitem__, reverse=True)[:top]
        out["cores_by_process"] = {named.get(pid, f"{procs1[pid][0]} {pid}"): round(used[pid], 2)
                                   for pid in busiest if used[pid] >= 0.01}
        return out


@dataclass
class Names:
    """Everything one run creates on the brokers, unique per run."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def queue(self) -> str:
        return f"bench-{self.run}"

    @property
    def ironic_topic(self) -> str:  # oslo topic: routing keys <topic>.info / .error
        return f"bench-{self.run}-ironic"

    @property
    def glance_topic(self) -> str:
        return f"bench-{self.run}-glance"

    @property
    def topic_prefix(self) -> str:  # relay topics
        return f"bench-{self.run}.notifications."

    @property
    def output_prefix(self) -> str:  # worker outputs
        return f"bench-{self.run}.pipeline."

    @property
    def app_id(self) -> str:
        return f"bench-{self.run}"

    def bindings(self) -> list[str]:
        return [f"ironic:{self.ironic_topic}.*", f"glance:{self.glance_topic}.*"]

    def oslo_default_queues(self) -> list[str]:
        """The queues oslo's rabbit driver declares itself, one per routing key it published to."""
        return [f"{t}.{p}" for t in (self.ironic_topic, self.glance_topic) for p in ("info", "error", "warn")]


def tree_env(tree: Path | None) -> dict[str, str]:
    """The environment that has a child import the `pipeline` package of `tree` (with cwd=tree)."""
    return {} if tree is None else {"PYTHONPATH": str(tree)}


class Proc:
    """A `python -m pipeline ...` child (of the `pipeline` package in `tree`, when given: another
    version's code run with this environment's libraries), its stderr kept in a file for errors and readiness."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str] | None = None,
                 profile: Path | None = None, tree: Path | None = None, module: str = "pipeline") -> None:
        self.name = name
        self.profile = profile  # cProfile output, written when the process exits normally
        self.log = Path(tempfile.mkstemp(prefix=f"pipeline-{name}-", suffix=".log")[1])
        self._log_file = self.log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "-m", module, *args],
            stdout=subprocess.DEVNULL, stderr=self._log_file, env={**os.environ, **(env or {}), **tree_env(tree)},
            cwd=tree,  # `python -m` puts the working directory first on the path: the tree's package wins
            start_new_session=True,  # our Ctrl-C is not theirs: we stop them in order
        )
        self.pid = self.popen.pid
        self.peak_rss_mb = 0.0

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def sample(self) -> float | None:
        """Current RSS (MB); also keeps the peak (VmHWM) while the process lives."""
        hwm = proc_status_mb(self.pid, "VmHWM")
        if hwm is not None:
            self.peak_rss_mb = max(self.peak_rss_mb, hwm)
        return proc_status_mb(self.pid, "VmRSS")

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    async def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}): {self.tail()}")
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s (waiting for {needle!r}): {self.tail()}")

    def tail(self, lines: int = 8) -> str:
        return " | ".join(self.text().strip().splitlines()[-lines:])

    async def stop(self, timeout: float = 20.0) -> int | None:
        self.sample()
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.alive():
                self.popen.kill()
                self.popen.wait()
        self._log_file.close()
        return self.popen.returncode

    async def exited(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.alive():
            self.sample()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout:.0f}s: {self.tail()}")
            await asyncio.sleep(0.1)
        self._log_file.close()
        return self.popen.returncode or 0

    def cleanup(self) -> None:
        self.log.unlink(missing_ok=True)


def start_bridge(names: Names, *, amqp_url: str, bootstrap: str, partitions: int = 6,
                 extra: Iterable[str] = (), profile: Path | None = None, tree: Path | None = None) -> Proc:
    args = ["bridge", "--source", "amqp", "--amqp-url", amqp_url, "--amqp-queue", names.queue,
            "--kafka-bootstrap-servers", bootstrap, "--topic-prefix", names.topic_prefix,
            "--topic-partitions", str(partitions), "--metrics-port", "0", *extra]
    for binding in names.bindings():
        args += ["--amqp-binding", binding]
    return Proc("bridge", args, profile=profile, tree=tree)


def start_worker(names: Names, *, bootstrap: str, partitions: int = 6, data_dir: str,
                 store: str = "memory://", web_port: int | None = None, extra: Iterable[str] = (),
                 profile: Path | None = None, tree: Path | None = None, topic_prefix: str | None = None,
                 env: dict[str, str] | None = None) -> Proc:
    """`topic_prefix`: relay topics other than the run's own (several workers reading one backlog)."""
    args = ["worker", "--kafka-bootstrap-servers", bootstrap, "--topic-prefix", topic_prefix or names.topic_prefix,
            "--output-prefix", names.output_prefix, "--app-id", names.app_id, "--topic-partitions",
            str(partitions), "--store", store, "--data-dir", data_dir,
            *(["--web-port", str(web_port)] if web_port else ["--no-web"]), *extra]
    return Proc("worker", args, env=env, profile=profile, tree=tree)


async def delete_queues(amqp_url: str, queues: Iterable[str]) -> None:
    """Delete queues if they exist (a missing one closes the channel: a fresh channel each)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        for name in queues:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                await queue.delete(if_unused=False, if_empty=False)
            except Exception:  # noqa: BLE001 - not there: nothing to clean
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()


async def end_run(names: Names, amqp_url: str, bootstrap: str, *procs: Proc) -> None:
    """Stop a run's processes, delete what it created on the brokers (its queue, the queues oslo
    declared, its topics and faust's), and remove the processes' logs."""
    for proc in procs:
        await proc.stop()
    await delete_queues(amqp_url, [names.queue, *names.oslo_default_queues()])
    await delete_topics(bootstrap, [f"bench-{names.run}.", names.app_id])
    for proc in procs:
        proc.cleanup()


class RecordCounter:
    """Records in a set of topics (sum of end offsets; the topics are new, nothing was truncated),
    polled cheaply by one long-lived client."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        from aiokafka import AIOKafkaConsumer

        self.topics = list(topics)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap.split(","))
        self.partitions: list = []

    async def __aenter__(self) -> RecordCounter:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def count(self) -> int:
        from aiokafka import TopicPartition

        if len(self.partitions) < len(self.topics):  # topics appear as the bridge creates them
            metadata = await self.consumer._client.fetch_all_metadata()
            self.partitions = [TopicPartition(t, p) for t in self.topics
                               for p in sorted(metadata.partitions_for_topic(t) or ())]
        if not self.partitions:
            return 0
        return sum((await self.consumer.end_offsets(self.partitions)).values())


async def count_records(bootstrap: str, topics: Sequence[str]) -> int:
    async with RecordCounter(bootstrap, topics) as counter:
        return await counter.count()


async def delete_topics(bootstrap: str, prefixes: Iterable[str]) -> None:
    """Delete every topic whose name starts with one of `prefixes` (a run's own topics only)."""
    from aiokafka.admin import AIOKafkaAdminClient

    prefixes = tuple(prefixes)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if doomed:
            await admin.delete_topics(doomed)
    except Exception:  # noqa: BLE001 - housekeeping: a topic left behind is harmless
        pass
    finally:
        await admin.close()
