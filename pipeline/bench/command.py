"""`pipeline bench` (`make bench`): the pipeline's figures next to the raw limits of this machine,
measured in one run on the same records, on the local Kafka and RabbitMQ.

Order of the stages (each prints progress on stderr):

1. core: decode + classify + mask + Avro-encode on one core (`pipeline.bench.core`).
2. records: a simulated fleet's notifications, rendered once as oslo's rabbit driver publishes them.
3. oslo: how fast oslo.messaging's own Notifier driver publishes (one message at a time, as a
   service does). It is too slow to feed the other stages on this machine, so they publish the very
   same bytes with aio-pika (a unit test holds the rendering byte-identical to oslo's).
4. RabbitMQ limit: the bodies into a queue, then a bare aio-pika consumer drains it.
5. Kafka limit: a bare aiokafka producer (the bridge's producer settings) writes the records the
   bridge would write.
6. bridge: the bodies into the bridge's queue, then `pipeline bridge` relays the backlog; its rate
   and its CPU time per record (process CPU seconds / records, from the first record to the last).
7. Kafka consume limit: a bare aiokafka consumer reads the bridge's records.
8. worker: `pipeline worker` (every agent, RocksDB store, web views) reads the same records; rate
   and CPU time per record as for the bridge.
9. bound by the machine: with bridge and worker running, events published through the exchanges
   at 5,000/s (keys ending in _5k), more than this 2-core machine carries next to its brokers: what
   it can, no target; each terminal event timed from its publish to its operation record in Kafka.
10. memory: peak RSS (VmHWM) of bridge and worker.
11. cost (`pipeline.bench.fleet`): a fresh bridge and worker, idle, then at 20, 100, 300 and 1,000
    events/s offered through RabbitMQ: each one's share of a core and CPU per event, the events
    relayed, the end-to-end latency (the `e2e_*` keys at 1,000/s, `e2e_*_100` at 100/s).
12. two workers: two `pipeline worker` processes in one consumer group read the same records (topics
    of their own, fed once the group is stable); the throughput of the pair.
13. memory at scale: a fresh worker reads one record per node of a 100,000-node fleet (each with
    the node's full state) and its RSS is read when it has read them all.
14. recovery (`pipeline.bench.fleet`): that worker's changelog read by a bare consumer, the worker
    restarted with its data dir kept, then with a fresh one: time to /readyz 200, restore rate.

`--stages` leaves out groups of them: `backlog` (3-10 and 12), `cost` (11), `recovery` (13, 14).

Every run uses its own queue, topics and consumer groups (`bench-<run>`), deleted at the end.
The stages themselves are in `pipeline.bench.stages`; the targets, the table and the summary printed
at the end in `pipeline.bench.results`. `--compare REF` runs none of this but the before/after pair
of `pipeline.bench.compare`: REF's worker and bridge against this checkout's, in turns, in one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.config import AMQP, ConfigError, Group, Setting, add_settings
from pipeline.simulate.outputs import Topics as OsloTopics

from . import stages
from .procs import Names, Proc, count_records, delete_queues, delete_topics, start_bridge, start_worker
from .records import KafkaRecord, Published, Workload, kafka_record
from .results import percent, profile_top, summary, table

STAGE_GROUPS = ("backlog", "cost", "recovery")


def _rates(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--cost-rates {text!r}: numbers, comma-separated (e.g. 0,20,100)") from None


SETTINGS: tuple[Group, ...] = (
    Group("benchmark", (
        Setting("--events", "BENCH_EVENTS", "records for the rate stages", 50_000, int),
        Setting("--nodes", None, "fleet size for those records", 1000, int),
        Setting("--images", None, "Glance images in that fleet", 100, int),
        Setting("--oslo-events", None, "events published through oslo.messaging's driver to time it", 3000, int),
        Setting("--e2e-rate", None, "the cost stage's rate whose latency is the report's e2e_* keys, events/s",
                1000.0, float),
        Setting("--e2e-seconds", None, "length of the cost stage at that rate, s", 30.0, float),
        Setting("--cost-rates", None, "rates the cost stage offers, events/s, comma-separated (0: idle)",
                [0.0, 20.0, 100.0, 300.0, 1000.0], _rates, metavar="LIST", shown_default="0,20,100,300,1000"),
        Setting("--cost-seconds", None, "length of each other rate of the cost stage, s", 20.0, float),
        Setting("--stages", None, "which groups of stages run, comma-separated: backlog, cost, recovery",
                list(STAGE_GROUPS), lambda text: [s.strip() for s in text.split(",") if s.strip()],
                metavar="LIST", shown_default=",".join(STAGE_GROUPS)),
        Setting("--e2e-high-rate", None, "offered load of the second latency stage, events/s; its keys end in _5k",
                5000.0, float),
        Setting("--e2e-high-seconds", None, "length of the second latency stage, s", 20.0, float),
        Setting("--rss-nodes", None, "fleet size of the worker memory stage", 100_000, int),
        Setting("--core-seconds", None, "length of the pure-core stage, s", 3.0, float),
        Setting("--partitions", None, "partitions of the bench's topics", 6, int),
        Setting("--seed", None, "the simulator's seed for the records", 0, int),
        Setting("--profile", None, "run bridge and worker under cProfile and print their hottest functions "
                "(slows them: the rates of such a run are not the figures)", False, kind="switch"),
        Setting("--bridge-args", None, "extra flags for the bridge, e.g. '--amqp-prefetch 5000' (to try settings)",
                "", metavar="'ARGS'", shown_default="none"),
        Setting("--worker-args", None, "extra flags for the worker", "", metavar="'ARGS'", shown_default="none"),
        Setting("--compare", None, "a git ref: run only the A/B of this checkout's worker and bridge against that "
                "version's, on the same records, in turns; the table goes to stdout, the figures to compare.json "
                "beside the report", "", metavar="REF", shown_default="none"),
        Setting("--compare-rounds", None, "rounds of the A/B (each runs both versions once)", 3, int),
        Setting("--compare-rate", None, "the A/B's cost stage: events/s offered to a fresh bridge and worker",
                100.0, float),
        Setting("--compare-seconds", None, "the A/B's cost stage: seconds of each round", 30.0, float),
        Setting("--soak", None, "run only the soak for this many seconds (pipeline.bench.soak): bridge and worker at "
                "--soak-rate, the worker restarted every --soak-restart-every s; 0 = no soak", 0.0, float,
                metavar="SECONDS"),
        Setting("--soak-rate", None, "the soak's offered rate, events/s", 100.0, float),
        Setting("--soak-restart-every", None, "the soak restarts the worker this often, s", 600.0, float),
        Setting("--compare-stages", None, "what the A/B measures, comma-separated: worker, bridge (backlogs), "
                "cost (CPU per event of both at --compare-rate)",
                ["worker", "bridge"], lambda text: [s.strip() for s in text.split(",") if s.strip()],
                metavar="LIST", shown_default="worker,bridge"),
        Setting("--report", "BENCH_REPORT", "JSON report", Path(".bench/report.json"), Path),
        Setting("--kafka-bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "the Kafka to measure", "127.0.0.1:9092"),
    )),
    AMQP,
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, SETTINGS)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Bench:
    """One run: the stages in order (see the module's docstring), their figures into `report`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bootstrap = args.kafka_bootstrap_servers
        from pipeline.config import amqp_connect_kwargs

        self.amqp = amqp_connect_kwargs(args)["url"]
        self.report: dict[str, Any] = {}
        self.names = Names()
        self.pair_names: Names | None = None  # set by the stages that create them, for the cleanup
        self.extra_cleanup: Names | None = None
        self.cost_names: Names | None = None
        self.procs: list[Proc] = []
        self.bodies: list[Published] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
        self.started = time.perf_counter()

    def stage(self, text: str) -> None:
        say(f"[{time.perf_counter() - self.started:6.1f}s] {text}")

    say = staticmethod(say)

    async def run(self) -> dict[str, Any]:
        from . import fleet

        r, wanted = self.report, self.args.stages
        self._frame()
        self._core()
        work, topics, kafka_records = self._records()
        if "backlog" in wanted:
            await self._oslo(work, topics)
            await self._amqp_limit()
            await self._kafka_limit(kafka_records)
            del kafka_records  # tens of thousands of encoded records, not needed again
            bridge = await self._bridge()
            worker_topics, worker_records = await self._consume_limit()
            worker = await self._worker(worker_records)
            await self._latency(work, worker_topics,
                                {"bridge": bridge.pid, "worker": worker.pid, "bench": os.getpid()})
            await self._memory(bridge, worker)
        if "cost" in wanted:
            self.cost_names = await fleet.cost(self)
        if "backlog" in wanted:
            await self._two_workers()
        if "recovery" in wanted:
            names, data_dir = await fleet.memory_at_scale(self)
            await fleet.recovery(self, names, data_dir)
        r["wall_seconds"] = round(time.perf_counter() - self.started, 1)
        r["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return r

    def _frame(self) -> None:
        a, r, names = self.args, self.report, self.names
        r.update({"bridge_args": a.bridge_args, "worker_args": a.worker_args})
        r.update({"stages": a.stages, "e2e_rate": a.e2e_rate, "cost_rates": a.cost_rates})
        r.update({"run": names.run, "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                  "events": a.events, "nodes": a.nodes, "images": a.images,
                  "partitions": a.partitions, "rss_nodes": a.rss_nodes,
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _core(self) -> None:
        from .core import measure_core

        self.stage(f"core: {self.args.core_seconds:.0f} s of decode + classify + mask + Avro encode")
        core = measure_core(self.args.core_seconds)
        self.report["core_rate"] = round(core["core_rate"], 1)
        # one thread on one core: its CPU per event is its time per event
        self.report["core_cpu_us_per_event"] = round(1e6 / core["core_rate"], 1)
        say(f"  core: {core['core_rate']:,.0f} events/s on one core")

    def _records(self) -> tuple[Workload, OsloTopics, list[KafkaRecord]]:
        """The fleet, its bodies (kept for the bridge and the two workers) and the records the bridge
        would write of them (for the Kafka limit)."""
        a, names = self.args, self.names
        self.stage(f"records: {a.events:,} notifications of a {a.nodes:,}-node, {a.images:,}-image fleet")
        topics = OsloTopics(ironic=names.ironic_topic, glance=names.glance_topic)
        work = Workload(a.nodes, a.images, seed=a.seed, topics=topics)
        bodies = self.bodies = work.publish_list(a.events)
        kafka_records = [kafka_record(p.body, f"bench-{names.run}.limit.") for p in bodies]
        self.report["body_bytes_avg"] = round(sum(len(p.body) for p in bodies) / len(bodies), 1)
        return work, topics, kafka_records

    async def _oslo(self, work: Workload, topics: OsloTopics) -> None:
        self.stage(f"oslo.messaging: {self.args.oslo_events:,} notifications through its rabbit driver")
        oslo_events = list(work.events(self.args.oslo_events))
        self.report["oslo_publish_rate"] = round(await stages.oslo_publish_rate(self.amqp, oslo_events, topics, say), 1)
        await delete_queues(self.amqp, self.names.oslo_default_queues())

    async def _amqp_limit(self) -> None:
        r, bodies = self.report, self.bodies
        self.stage("RabbitMQ limit: fill a queue, drain it with a bare aio-pika consumer")
        drain_queue = f"{self.names.queue}-drain"
        await stages.declare_queue(self.amqp, drain_queue)
        r["amqp_publish_rate"] = round(await stages.fill_queue(self.amqp, drain_queue, bodies, say, "publish"), 1)
        r["amqp_drain_rate"] = round(await stages.amqp_drain(self.amqp, drain_queue, len(bodies), say), 1)

    async def _kafka_limit(self, kafka_records: list[KafkaRecord]) -> None:
        self.stage("Kafka limit: a bare aiokafka producer writes the bridge's records")
        rate = await stages.kafka_produce(self.bootstrap, kafka_records, self.args.partitions, say)
        self.report["kafka_produce_rate"] = round(rate, 1)

    async def _bridge(self) -> Proc:
        a, r, names = self.args, self.report, self.names
        self.stage("bridge: fill its queue, then `pipeline bridge` relays the backlog")
        await stages.declare_queue(self.amqp, names.queue)
        await stages.fill_queue(self.amqp, names.queue, self.bodies, say, "publish")
        bridge = self._spawn(start_bridge(names, amqp_url=self.amqp, bootstrap=self.bootstrap,
                                          partitions=a.partitions, profile=self._profile("bridge"),
                                          extra=shlex.split(a.bridge_args)))
        relayed = await stages.wait_relayed(bridge, self.bootstrap, self._relay_topics(), len(self.bodies), say)
        r["bridge_rate"] = round(relayed.rate, 1)
        r["bridge_cpu_us_per_event"] = round(relayed.cpu_us_per_event, 1)
        say(f"  bridge: {relayed.rate:,.0f}/s, {relayed.cpu_us_per_event:,.0f} µs of CPU per record")
        return bridge

    async def _consume_limit(self) -> tuple[list[str], int]:
        """The worker's topics and how many records they hold, read once by a bare consumer."""
        # the worker reads the families that have operations (not image.member, metadef_*): both
        # it and its limit read exactly those topics
        from pipeline.streams.topics import Topics as WorkerTopics

        r, names = self.report, self.names
        worker_topics = list(WorkerTopics.named(names.topic_prefix, names.output_prefix).sources)
        worker_records = await count_records(self.bootstrap, worker_topics)
        r["worker_records"] = worker_records
        self.stage(f"Kafka consume limit: a bare aiokafka consumer reads the worker's {worker_records:,} records")
        r["kafka_consume_rate"] = round(await stages.kafka_consume(self.bootstrap, worker_topics, worker_records, say), 1)
        return worker_topics, worker_records

    async def _worker(self, worker_records: int) -> Proc:
        a, r, names = self.args, self.report, self.names
        self.stage("worker: `pipeline worker` (every agent, RocksDB) reads the same records")
        port = stages.free_port()
        worker = self._spawn(start_worker(names, bootstrap=self.bootstrap, partitions=a.partitions,
                                          data_dir=str(self.tmp / "worker"), store="rocksdb://", web_port=port,
                                          profile=self._profile("worker"), extra=shlex.split(a.worker_args)))
        read, source = await stages.wait_worker(worker, port, self.bootstrap, names.app_id, worker_records, say)
        r["worker_rate"], r["worker_rate_measured_by"] = round(read.rate, 1), source
        r["worker_cpu_us_per_event"] = round(read.cpu_us_per_event, 1)
        say(f"  worker: {read.rate:,.0f}/s, {read.cpu_us_per_event:,.0f} µs of CPU per record")
        return worker

    async def _latency(self, work: Workload, worker_topics: list[str], pids: dict[str, int]) -> None:
        """The backlog's bridge and worker at the load bound by the machine; its keys end in _5k
        (the latency at 100 and 1,000 events/s is the cost stage's, on a fresh pair)."""
        a, names = self.args, self.names
        for rate, seconds, suffix in ((a.e2e_high_rate, a.e2e_high_seconds, "_5k"),):
            count = int(rate * seconds)
            self.stage(f"end to end: {count:,} events at {rate:,.0f}/s through RabbitMQ, bridge and worker")
            e2e = await stages.end_to_end(self.amqp, self.bootstrap, f"{names.output_prefix}operations",
                                          work.publish_list(count), rate, say, relay_topics=worker_topics,
                                          pids=pids)
            self.report.update({key + suffix: value for key, value in e2e.items()})
            say(f"  p50 {e2e['e2e_p50_ms']} ms, p99 {e2e['e2e_p99_ms']} ms over {e2e['e2e_matched']:,} of "
                f"{e2e['e2e_operations']:,} operations; of which publish -> relay record p50 {e2e['e2e_bridge_p50_ms']} "
                f"ms p99 {e2e['e2e_bridge_p99_ms']} ms, relay record -> operation record p50 "
                f"{e2e['e2e_worker_p50_ms']} ms p99 {e2e['e2e_worker_p99_ms']} ms")
            say(f"  while publishing: the machine {percent(e2e['e2e_machine_busy'])} busy on its {os.cpu_count()} "
                f"cores; cores used: " + ", ".join(f"{name} {cores}" for name, cores in e2e['e2e_cores_by_process'].items()))

    async def _memory(self, bridge: Proc, worker: Proc) -> None:
        r = self.report
        self.stage("memory: stop bridge and worker, read their peak RSS")
        for proc in (bridge, worker):
            await proc.stop()
        r["bridge_peak_rss_mb"] = round(bridge.peak_rss_mb, 1)
        r["worker_peak_rss_mb"] = round(worker.peak_rss_mb, 1)
        if self.args.profile:
            r["profiles"] = {p.name: str(p.profile) for p in (bridge, worker)}

    async def _two_workers(self) -> None:
        """Two worker processes in one consumer group, throughput of the pair. They start on empty
        topics of their own and are fed once the group is stable, so no rebalance in the middle
        has them read a record twice (the local Kafka rebalances a new group at once)."""
        a, r = self.args, self.report
        from pipeline.bridge.relay import catalog_topics
        from pipeline.streams.topics import Topics as WorkerTopics

        names = self.pair_names = Names(run=f"{self.names.run}-pair")
        records = [kafka_record(p.body, names.topic_prefix) for p in self.bodies]
        sources = set(WorkerTopics.named(names.topic_prefix, names.output_prefix).sources)
        expected = sum(1 for record in records if record[0] in sources)
        self.stage(f"two workers: one group of two `pipeline worker` processes reads {expected:,} records")
        await stages.create_topics(self.bootstrap, catalog_topics(names.topic_prefix), a.partitions)
        pair = []
        for n in (1, 2):
            port = stages.free_port()
            pair.append((self._spawn(start_worker(
                names, bootstrap=self.bootstrap, partitions=a.partitions, data_dir=str(self.tmp / f"pair-{n}"),
                store="rocksdb://", web_port=port, extra=shlex.split(a.worker_args))), port))
        members = await stages.wait_group(self.bootstrap, names.app_id, len(pair), say, [p for p, _ in pair])
        say(f"  group {names.app_id}: {members} members, stable; producing the records")
        feeding = asyncio.create_task(stages.kafka_produce(self.bootstrap, records, a.partitions, say))
        read, source = await stages.wait_workers(pair, self.bootstrap, names.app_id, expected, say,
                                                 label="two workers")
        await feeding
        r["two_worker_rate"] = round(read.rate, 1)
        r["two_worker_cpu_us_per_event"] = round(read.cpu_us_per_event, 1)
        r["two_worker_records"] = expected
        r["two_worker_split"] = [stages.worker_records(port) for _, port in pair]
        say(f"  two workers: {read.rate:,.0f}/s together ({source}), {read.cpu_us_per_event:,.0f} µs of CPU "
            f"per record, records read by each: {r['two_worker_split']}")
        for proc, _ in pair:
            await proc.stop()

    def _profile(self, name: str) -> Path | None:
        if not self.args.profile:
            return None
        self.args.report.parent.mkdir(parents=True, exist_ok=True)
        return (self.args.report.parent / f"{name}.prof").resolve()

    def _spawn(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    spawn = _spawn

    def _relay_topics(self) -> list[str]:
        from pipeline import catalog, events

        return sorted({events.topic_for(row.family, self.names.topic_prefix) for row in catalog.ROWS})

    async def cleanup(self) -> None:
        for proc in self.procs:
            await proc.stop(timeout=15)
        names = [self.names, self.extra_cleanup, self.pair_names, self.cost_names]
        queues = [self.names.queue, f"{self.names.queue}-drain", *self.names.oslo_default_queues()]
        if self.cost_names is not None:
            queues.append(self.cost_names.queue)
        try:
            await delete_queues(self.amqp, queues)
        except Exception as exc:  # noqa: BLE001 - report, do not hide the figures
            say(f"cleanup: queues not deleted ({exc})")
        prefixes = [f"bench-{n.run}" for n in names if n is not None]
        await delete_topics(self.bootstrap, prefixes)
        for proc in self.procs:
            if proc.alive() or proc.popen.returncode not in (0, None, -15):
                say(f"{proc.name} log: {proc.tail(4)}")
            proc.cleanup()


def _check(args: argparse.Namespace) -> None:
    for name in ("events", "nodes", "oslo_events", "e2e_rate", "e2e_seconds", "e2e_high_rate", "e2e_high_seconds",
                 "rss_nodes", "partitions", "core_seconds", "cost_seconds"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    unknown = set(args.stages) - set(STAGE_GROUPS)
    if unknown or not args.stages:
        raise ConfigError(f"--stages: {', '.join(sorted(unknown)) or 'none given'}; choose from {', '.join(STAGE_GROUPS)}")
    if args.soak < 0 or args.soak_rate <= 0 or args.soak_restart_every <= 0:
        raise ConfigError("--soak must not be negative, --soak-rate and --soak-restart-every must be positive")
    if any(rate < 0 for rate in args.cost_rates):
        raise ConfigError("--cost-rates must not be negative")
    if args.images < 0:
        raise ConfigError("--images must not be negative")
    try:  # now, not after minutes of measuring
        args.report.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--report {args.report}: {exc.strerror} ({exc.filename})") from None


def run(args: argparse.Namespace) -> int:
    _check(args)
    from . import compare

    if args.compare:
        compare.check(args)
    bench = Bench(args)

    async def main() -> dict[str, Any]:
        # SIGTERM (a timeout, CI) cancels like Ctrl-C does, so the queues, topics and children go
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("bench: main() runs outside a task")
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        if args.compare:  # the before/after pair only (pipeline.bench.compare), with its own cleanup
            return await compare.run(args, bench.amqp)
        if args.soak:
            from . import soak

            return await soak.run(args, bench.amqp, say, bench.tmp)
        try:
            return await bench.run()
        finally:
            await asyncio.shield(bench.cleanup())

    try:
        report = asyncio.run(main())
    except asyncio.CancelledError:
        say("bench: stopped")
        return 130
    except (OSError, ConnectionError) as exc:
        raise ConfigError(f"a broker is not reachable ({exc}); run `make up`") from None
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    if args.soak:
        print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
        return 0
    if args.compare:
        print(f"{report['table']}\n\nA/B of {' and '.join(report['labels'])}: "
              f"{report['rounds']} rounds, {report['events']:,} records, {report['wall_seconds']:.0f} s\n"
              f"report: {report['path']}")
        return 0
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\n{summary(report)}\nreport: {args.report}")
    if args.profile:
        for name, path in report.get("profiles", {}).items():
            print(f"\n--- {name}: hottest functions (tottime) ---\n{profile_top(Path(path))}")
    return 0
