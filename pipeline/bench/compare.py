"""`pipeline bench --compare REF`: this checkout's worker and bridge against REF's, in one run.

A change to the hot path is shown as a before/after pair measured in the same run on the same
records: on a shared machine the rates of two runs drift by up to 2x from day to day, which is more
than most single changes gain. So the two versions take turns (REF, this, this, REF, ...: neither
always runs first), each round on a fresh consumer group or a freshly filled queue, and the report
is each round's CPU time per record and rate, their means, and the change.

- worker: the same relay records (written once by a bare producer, encoded by this checkout) read by
  `pipeline worker` with every agent, RocksDB and the web views, as in the bench's worker stage;
- bridge: the same bodies in a queue of its own per round, relayed by `pipeline bridge`;
- cost: a fresh bridge and worker of each version, events offered through RabbitMQ at
  `--compare-rate` for `--compare-seconds`: the CPU per event of each process (the rows "bridge at
  R/s" and "worker at R/s", their rate the events relayed per second) and the end-to-end p50/p99
  beside them, the cost stage of `make bench` in turns.

REF's files come from `git archive` (committed content only) and run with this environment's
libraries; this checkout runs as it is on disk, uncommitted changes included.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.simulate.outputs import Topics as OsloTopics

from . import stages
from .procs import Names, Proc, delete_queues, delete_topics, start_bridge, start_worker, tree_env
from .records import Workload, kafka_record

__all__ = ["Side", "export_tree", "order", "report_text", "run"]

CHECKOUT = Path(__file__).resolve().parents[2]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, check=False)


def export_tree(ref: str, into: Path) -> str:
    """REF's committed files unpacked in `into`; returns its short commit id."""
    found = _git("rev-parse", "--short", "--verify", "--end-of-options", f"{ref}^{{commit}}")
    if found.returncode != 0:
        why = (found.stderr.decode(errors="replace").strip().splitlines() or ["unknown"])[-1]
        raise ConfigError(f"--compare {ref}: not a commit of {CHECKOUT} ({why})")
    commit = found.stdout.decode().strip()
    archive = _git("archive", "--format=tar", commit)
    if archive.returncode != 0:
        raise ConfigError(f"--compare {ref}: git archive failed ({archive.stderr.decode(errors='replace').strip()})")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return commit


def _package_of(tree: Path) -> Path:
    """Where a child started in `tree` imports `pipeline` from (it must be the tree's own)."""
    done = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], cwd=tree,
                          env={**os.environ, **tree_env(tree)}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"--compare: the package in {tree} does not import: {done.stderr.strip().splitlines()[-1:]}")
    return Path(done.stdout.strip()).resolve().parent


Round = tuple[float, float, float]  # records/s, CPU µs per record, peak RSS (VmHWM) MB


@dataclass
class Side:
    """One version of the code and its figures: (rate, CPU µs per record, peak RSS MB) per round."""

    label: str
    tree: Path
    worker: list[Round] = field(default_factory=list)
    bridge: list[Round] = field(default_factory=list)
    cost_bridge: list[Round] = field(default_factory=list)  # at a fixed offered rate: relayed/s, µs per event
    cost_worker: list[Round] = field(default_factory=list)
    latency: list[tuple[float, float]] = field(default_factory=list)  # e2e (p50, p99) ms of each cost round


def _rows(stage: str, rate: float) -> list[tuple[str, str]]:
    """(the row's name, the Side field it shows) of a stage."""
    if stage == "cost":
        return [(f"bridge at {rate:,.0f}/s", "cost_bridge"), (f"worker at {rate:,.0f}/s", "cost_worker")]
    return [(stage, stage)]


def order(sides: list[Side], rounds: int) -> list[list[Side]]:
    """Who runs first alternates per round (A B, B A, A B, ...): a machine that slows down or
    warms up during the run favours neither."""
    return [sides if r % 2 == 0 else sides[::-1] for r in range(rounds)]


def _mean(rounds: list[Round], index: int) -> float | None:
    return statistics.fmean(r[index] for r in rounds) if rounds else None


def _change(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return "-"
    return f"{(after - before) / before * 100:+.1f} %"


def report_text(sides: list[Side], stages_run: list[str], rate: float = 100.0) -> str:
    """The table: per stage and version, every round's CPU per record and rate, their means, the
    highest peak RSS, and this checkout's change against REF (negative CPU, positive rate: faster);
    for the cost stage each version's end-to-end latency too."""
    before, after = sides
    rows = [row for stage in stages_run for row in _rows(stage, rate)]
    lines = ["| stage | version | CPU per record, each round | mean | rate, each round | mean | peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for stage, name in rows:
        for side in sides:
            rounds = getattr(side, name)
            cpu = ", ".join(f"{r[1]:.1f}" for r in rounds)
            rates = ", ".join(f"{r[0]:,.0f}" for r in rounds)
            rss = max((r[2] for r in rounds), default=0.0)
            lines.append(f"| {stage} | {side.label} | {cpu} µs | {_mean(rounds, 1) or 0:.1f} µs | {rates}/s "
                         f"| {_mean(rounds, 0) or 0:,.0f}/s | {rss:,.1f} MB |")
    lines.append("")
    for stage, name in rows:
        b, a = getattr(before, name), getattr(after, name)
        lines.append(f"{stage}: CPU per record {_mean(b, 1) or 0:.1f} -> {_mean(a, 1) or 0:.1f} µs "
                     f"({_change(_mean(b, 1), _mean(a, 1))}), rate {_mean(b, 0) or 0:,.0f} -> "
                     f"{_mean(a, 0) or 0:,.0f}/s ({_change(_mean(b, 0), _mean(a, 0))})")
    for side in sides if "cost" in stages_run else ():
        each = ", ".join(f"{p50:.0f}/{p99:.0f}" for p50, p99 in side.latency)
        lines.append(f"end to end at {rate:,.0f}/s, {side.label}: p50/p99 {each} ms")
    return "\n".join(lines)


def _measured(window: stages.Window, proc: Proc, what: str) -> Round:
    if window.records == 0:  # the first sample already saw every record: it came too late
        raise ConfigError(f"{what} was done before its first progress sample: raise --events")
    return window.rate, window.cpu_us_per_event, proc.peak_rss_mb


class Compare:
    def __init__(self, args: argparse.Namespace, amqp_url: str) -> None:
        self.args = args
        self.amqp = amqp_url
        self.bootstrap = args.kafka_bootstrap_servers
        self.names = Names()
        self.tmp = Path(tempfile.mkdtemp(prefix="pipeline-compare-"))
        self.runs = 0
        self.queues: list[str] = []
        self.started = time.perf_counter()

    def stage(self, text: str) -> None:
        say(f"[{time.perf_counter() - self.started:6.1f}s] {text}")

    def _run_names(self) -> Names:
        self.runs += 1  # under the run's prefix, so that the cleanup finds every topic and group
        return Names(run=f"{self.names.run}-{self.runs}")

    async def worker_round(self, side: Side, relay_prefix: str, expected: int) -> None:
        names = self._run_names()
        port = stages.free_port()
        worker = start_worker(names, bootstrap=self.bootstrap, partitions=self.args.partitions,
                              data_dir=str(self.tmp / f"worker-{self.runs}"), store="rocksdb://", web_port=port,
                              extra=shlex.split(self.args.worker_args), tree=side.tree, topic_prefix=relay_prefix)
        try:
            read, _ = await stages.wait_worker(worker, port, self.bootstrap, names.app_id, expected, say,
                                               label=f"worker ({side.label})")
        finally:
            await worker.stop()
            worker.cleanup()
        side.worker.append(_measured(read, worker, f"worker ({side.label})"))
        say(f"  worker ({side.label}): {read.rate:,.0f}/s, {read.cpu_us_per_event:.1f} µs of CPU per record")

    async def bridge_round(self, side: Side, bodies: list) -> None:
        from pipeline.bridge.relay import catalog_topics

        names = self._run_names()
        self.queues.append(names.queue)
        await stages.declare_queue(self.amqp, names.queue)
        await stages.fill_queue(self.amqp, names.queue, bodies, lambda _: None, "publish")
        bridge = start_bridge(names, amqp_url=self.amqp, bootstrap=self.bootstrap, partitions=self.args.partitions,
                              extra=shlex.split(self.args.bridge_args), tree=side.tree)
        try:
            relayed = await stages.wait_relayed(bridge, self.bootstrap, catalog_topics(names.topic_prefix),
                                                len(bodies), say)
        finally:
            await bridge.stop()
            bridge.cleanup()
            await delete_queues(self.amqp, [names.queue])
        side.bridge.append(_measured(relayed, bridge, f"bridge ({side.label})"))
        say(f"  bridge ({side.label}): {relayed.rate:,.0f}/s, {relayed.cpu_us_per_event:.1f} µs of CPU per record")

    async def cost_round(self, side: Side) -> None:
        """A fresh bridge and worker of `side` at `--compare-rate` (the bench's cost stage, one rate)."""
        from pipeline.bridge.relay import catalog_topics

        from .stages.cost import cost_entry, until_ready

        a = self.args
        names = self._run_names()
        self.queues.append(names.queue)
        await stages.declare_queue(self.amqp, names.queue)
        work = Workload(a.nodes, a.images, seed=a.seed,
                        topics=OsloTopics(ironic=names.ironic_topic, glance=names.glance_topic))
        port = stages.free_port()
        bridge = start_bridge(names, amqp_url=self.amqp, bootstrap=self.bootstrap, partitions=a.partitions,
                              extra=shlex.split(a.bridge_args), tree=side.tree)
        worker = start_worker(names, bootstrap=self.bootstrap, partitions=a.partitions,
                              data_dir=str(self.tmp / f"worker-{self.runs}"), store="rocksdb://", web_port=port,
                              extra=shlex.split(a.worker_args), tree=side.tree)
        try:
            await bridge.wait_for("relaying from", 120)
            await until_ready(worker, port, say, f"worker ({side.label})")
            await asyncio.sleep(5.0)  # their start-up is no part of the cost
            e2e = await stages.end_to_end(self.amqp, self.bootstrap, f"{names.output_prefix}operations",
                                          work.publish_list(int(a.compare_rate * a.compare_seconds)), a.compare_rate,
                                          lambda _: None, relay_topics=catalog_topics(names.topic_prefix),
                                          pids={"bridge": bridge.pid, "worker": worker.pid})
        finally:
            for proc in (bridge, worker):
                await proc.stop()
                proc.cleanup()
        share = {key[4:]: value for key, value in e2e.items() if key.startswith("e2e_")}
        entry = cost_entry(a.compare_rate, e2e["e2e_publish_seconds"], share, e2e["e2e_relayed"])
        for name, proc, rounds in (("bridge", bridge, side.cost_bridge), ("worker", worker, side.cost_worker)):
            if entry[f"{name}_cpu_us_per_event"] is None:
                raise ConfigError(f"{name} ({side.label}): no CPU figure (it exited?)")
            rounds.append((entry["relayed_per_s"], entry[f"{name}_cpu_us_per_event"], proc.peak_rss_mb))
        side.latency.append((e2e["e2e_p50_ms"] or float("nan"), e2e["e2e_p99_ms"] or float("nan")))
        say(f"  {side.label}: bridge {entry['bridge_cpu_us_per_event']:,.0f} µs, worker "
            f"{entry['worker_cpu_us_per_event']:,.0f} µs per event; e2e p50 {e2e['e2e_p50_ms']} p99 {e2e['e2e_p99_ms']} ms")

    async def run(self) -> dict[str, Any]:
        from pipeline.bridge.relay import catalog_topics
        from pipeline.streams.topics import Topics as WorkerTopics

        a = self.args
        commit = export_tree(a.compare, self.tmp / "ref")
        here = _git("rev-parse", "--short", "HEAD").stdout.decode().strip() or "?"
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        sides = [Side(commit if commit.startswith(a.compare) else f"{a.compare} ({commit})", self.tmp / "ref"),
                 Side(f"this checkout ({here}{' + changes' if dirty else ''})", CHECKOUT)]
        for side in sides:
            if _package_of(side.tree) != (side.tree / "pipeline").resolve():
                raise ConfigError(f"--compare: a child started in {side.tree} does not import its own package")
        wanted = [s for s in ("worker", "bridge", "cost") if s in a.compare_stages]

        names = self.names
        self.stage(f"records: {a.events:,} notifications of a {a.nodes:,}-node, {a.images:,}-image fleet")
        work = Workload(a.nodes, a.images, seed=a.seed, topics=OsloTopics(ironic=names.ironic_topic,
                                                                          glance=names.glance_topic))
        bodies = work.publish_list(a.events)
        expected = 0
        if "worker" in wanted:
            records = [kafka_record(p.body, names.topic_prefix) for p in bodies]
            sources = set(WorkerTopics.named(names.topic_prefix, names.output_prefix).sources)
            expected = sum(1 for record in records if record[0] in sources)
            self.stage(f"relay records: {len(records):,} written once by a bare producer ({expected:,} for the worker)")
            await stages.create_topics(self.bootstrap, catalog_topics(names.topic_prefix), a.partitions)
            await stages.kafka_produce(self.bootstrap, records, a.partitions, say)
            del records
        for number, turn in enumerate(order(sides, a.compare_rounds), 1):
            for stage in wanted:
                for side in turn:
                    self.stage(f"round {number} of {a.compare_rounds}: {stage} of {side.label}")
                    if stage == "worker":
                        await self.worker_round(side, names.topic_prefix, expected)
                    elif stage == "bridge":
                        await self.bridge_round(side, bodies)
                    else:
                        await self.cost_round(side)
        return {"run": names.run, "compare": a.compare, "commit": commit, "labels": [s.label for s in sides],
                "events": a.events, "rounds": a.compare_rounds,
                "stages": wanted, "wall_seconds": round(time.perf_counter() - self.started, 1),
                "sides": [{"label": s.label, "worker": s.worker, "bridge": s.bridge, "cost_bridge": s.cost_bridge,
                           "cost_worker": s.cost_worker, "latency": s.latency} for s in sides],
                "compare_rate": a.compare_rate, "table": report_text(sides, wanted, a.compare_rate)}

    async def cleanup(self) -> None:
        try:
            await delete_queues(self.amqp, self.queues)
        except Exception as exc:  # noqa: BLE001 - report, do not hide the figures
            say(f"cleanup: queues not deleted ({exc})")
        await delete_topics(self.bootstrap, [f"bench-{self.names.run}"])
        shutil.rmtree(self.tmp, ignore_errors=True)


def check(args: argparse.Namespace) -> None:
    if args.compare_rounds <= 0:
        raise ConfigError("--compare-rounds must be positive")
    unknown = set(args.compare_stages) - {"worker", "bridge", "cost"}
    if unknown or not args.compare_stages:
        raise ConfigError(f"--compare-stages: {', '.join(sorted(unknown)) or 'none given'}; choose worker, bridge, cost")
    if args.compare_rate <= 0 or args.compare_seconds <= 0:
        raise ConfigError("--compare-rate and --compare-seconds must be positive")


async def run(args: argparse.Namespace, amqp_url: str) -> dict[str, Any]:
    compare = Compare(args, amqp_url)
    try:
        result = await compare.run()
    finally:
        await asyncio.shield(compare.cleanup())
    path = args.report.parent / "compare.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(path)
    return result
