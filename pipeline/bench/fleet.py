"""The bench's two stages about what a real fleet's traffic costs (`pipeline.bench.command` runs
them after the backlog stages):

- cost: a fresh bridge and worker on names of their own, idle for a while (heartbeats and timers
  only), then events offered through RabbitMQ at each of `--cost-rates`; per rate the share of a
  core each process used and its CPU per event (/proc, over the publishing window), the events the
  bridge relayed in that window, and the end-to-end latency (the `e2e_*` keys at `--e2e-rate`, the
  `e2e_*_100` keys at 100/s);
- recovery: the changelog of the 100,000-node memory stage's worker read by a bare aiokafka consumer,
  then that worker restarted with its data dir kept, then a worker with a fresh data dir (a pod
  rescheduled to another node): the time from start to /readyz 200 of each, and the restore's rate
  (changelog records over the time /readyz said "recovering tables").
"""
from __future__ import annotations

import asyncio
import shlex
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.simulate.outputs import Topics as OsloTopics

from . import stages
from .procs import Names, Proc, RecordCounter, count_records, start_bridge, start_worker
from .records import Workload
from .stages.cost import changelog_topics, cost_entry, idle, until_ready

if TYPE_CHECKING:
    from .command import Bench

__all__ = ["cost", "memory_at_scale", "recovery"]

STARTUP_SETTLE_S = 5.0  # after both are up: their start-up work is not a rate's cost
BARE_RATES = (20, 100)  # the rates at which a bare AMQP consumer is measured beside the bridge
BARE_SECONDS = 15.0


async def cost(bench: Bench) -> Names:
    """The cost stage; its figures into `bench.report` (`cost`, `e2e_*`, `e2e_*_100`). Returns the
    names it used (for the cleanup)."""
    from pipeline.bridge.relay import catalog_topics

    a, r, say = bench.args, bench.report, bench.say
    names = Names(run=f"{bench.names.run}-cost")
    work = Workload(a.nodes, a.images, seed=a.seed + 1,
                    topics=OsloTopics(ironic=names.ironic_topic, glance=names.glance_topic))
    bench.stage(f"cost: a fresh bridge and worker, idle then at {', '.join(f'{x:,.0f}' for x in a.cost_rates if x)} "
                f"events/s offered through RabbitMQ")
    await stages.declare_queue(bench.amqp, names.queue)
    bridge = bench.spawn(start_bridge(names, amqp_url=bench.amqp, bootstrap=bench.bootstrap, partitions=a.partitions,
                                      extra=shlex.split(a.bridge_args)))
    port = stages.free_port()
    worker = bench.spawn(start_worker(names, bootstrap=bench.bootstrap, partitions=a.partitions,
                                      data_dir=str(bench.tmp / "worker-cost"), store="rocksdb://", web_port=port,
                                      extra=shlex.split(a.worker_args)))
    await bridge.wait_for("relaying from", 120)
    await until_ready(worker, port, say, "worker (cost stage)")
    await asyncio.sleep(STARTUP_SETTLE_S)
    pids = {"bridge": bridge.pid, "worker": worker.pid}
    r["cost"] = []
    for rate in a.cost_rates:
        if not rate:
            entry = cost_entry(0, a.cost_seconds, await idle(pids, a.cost_seconds, say), 0)
        else:
            seconds = a.e2e_seconds if rate == a.e2e_rate else a.cost_seconds
            count = max(1, int(rate * seconds))
            bench.stage(f"cost: {count:,} events at {rate:,.0f}/s")
            e2e = await stages.end_to_end(bench.amqp, bench.bootstrap, f"{names.output_prefix}operations",
                                          work.publish_list(count), rate, say,
                                          relay_topics=catalog_topics(names.topic_prefix), pids=pids)
            share = {key[4:]: value for key, value in e2e.items() if key.startswith("e2e_")}
            entry = cost_entry(rate, e2e["e2e_publish_seconds"], share, e2e["e2e_relayed"])
            entry.update({"e2e_p50_ms": e2e["e2e_p50_ms"], "e2e_p99_ms": e2e["e2e_p99_ms"]})
            if rate == 100:
                r.update({f"{key}_100": value for key, value in e2e.items()})
            if rate == a.e2e_rate:
                r.update(e2e)
            say(f"  p50 {e2e['e2e_p50_ms']} ms, p99 {e2e['e2e_p99_ms']} ms over {e2e['e2e_matched']:,} of "
                f"{e2e['e2e_operations']:,} operations")
        r["cost"].append(entry)
        say(f"  cost at {rate:,.0f}/s: relayed {entry['relayed_per_s']:,.1f}/s; bridge {_share(entry, 'bridge')}, "
            f"worker {_share(entry, 'worker')}")
    for proc in (bridge, worker):
        await proc.stop()
    for entry in r["cost"]:
        if entry["rate"] in BARE_RATES:
            entry["bare_amqp_cpu_us_per_event"] = await _bare_amqp(bench, names, work, entry["rate"])
    return names


async def _bare_amqp(bench: Bench, names: Names, work: Workload, rate: float) -> float | None:
    """The raw limit beside a rate's cost: a bare aio-pika consumer (`pipeline.bench.bare`) of the
    bridge's queue (still bound, the bridge stopped) acking the same events at the same rate; its
    CPU per event."""
    seconds = min(bench.args.cost_seconds, BARE_SECONDS)
    count = max(1, int(rate * seconds))
    bench.stage(f"cost: a bare aio-pika consumer, {count:,} events at {rate:,.0f}/s")
    bare = bench.spawn(Proc("bare-amqp", [bench.amqp, names.queue], module="pipeline.bench.bare"))
    await bare.wait_for("consuming", 60)
    before = bare.cpu_seconds()
    await stages.publish_on_schedule(bench.amqp, work.publish_list(count), rate, bench.say, {})
    await asyncio.sleep(1.0)  # the last deliveries
    after = bare.cpu_seconds()
    await bare.stop()
    us = None if before is None or after is None else round((after - before) / count * 1e6, 1)
    bench.say(f"  bare aio-pika consumer at {rate:,.0f}/s: {us} µs per event")
    return us


async def memory_at_scale(bench: Bench) -> tuple[Names, str]:
    """The worker's RSS at `--rss-nodes` nodes; returns its names and data dir (its tables are
    the recovery stage's)."""
    a, r = bench.args, bench.report
    names = Names(run=f"{bench.names.run}-rss")
    bench.stage(f"memory at {a.rss_nodes:,} nodes: one power_state_corrected per node, straight to the relay topics")
    from pipeline.simulate.command import unique_id
    from pipeline.simulate.fleet import Fleet
    from pipeline.simulate.outputs import KafkaOutput

    fleet = Fleet(a.rss_nodes, 0, seed=a.seed, start=time_now(), keep_operations=False)
    output = KafkaOutput(bench.bootstrap.split(","), names.topic_prefix, a.partitions, "avro", OsloTopics())
    await output.start()
    tick = stages.Ticker(bench.say, "produce", a.rss_nodes)
    sent = 0
    for event in fleet.census():
        await output.send(event, unique_id(event.message_id))
        sent += 1
        tick(sent)
    await output.close()
    del fleet
    port = stages.free_port()
    data_dir = str(bench.tmp / "worker-rss")
    bench.extra_cleanup = names
    worker = bench.spawn(start_worker(names, bootstrap=bench.bootstrap, partitions=a.partitions,
                                      data_dir=data_dir, store="rocksdb://", web_port=port,
                                      extra=shlex.split(a.worker_args)))
    await stages.wait_worker(worker, port, bench.bootstrap, names.app_id, sent, bench.say, label="worker (memory stage)")
    # records read are not nodes held: a worker that reads some records twice (a rebalance, a
    # re-read from the committed offset) gets there first; so wait for every node's state in the
    # table's changelog too (the recovery stage restores it)
    await _every_node_written(bench, worker, names, sent)
    rss = worker.sample()
    r["worker_rss_mb_100k_nodes"] = round(rss, 1) if rss is not None else None
    r["worker_peak_rss_mb_100k_nodes"] = round(worker.peak_rss_mb, 1)
    r["rss_records"] = sent
    await worker.stop()
    return names, data_dir


async def _every_node_written(bench: Bench, worker: Proc, names: Names, nodes: int, timeout: float = 600) -> None:
    topic = changelog_topics(names.app_id, ("resources",))
    tick = stages.Ticker(bench.say, "node states in the changelog", nodes)
    deadline = asyncio.get_running_loop().time() + timeout
    async with RecordCounter(bench.bootstrap, topic) as counter:
        while (written := await counter.count()) < nodes:
            tick(written)
            if not worker.alive():
                raise RuntimeError(f"worker (memory stage) exited: {worker.tail()}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"worker (memory stage): {written:,} of {nodes:,} node states in {timeout:.0f}s")
            await asyncio.sleep(1.0)
    tick(written, force=True)


def time_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _share(entry: dict[str, Any], name: str) -> str:
    cores, us = entry.get(f"{name}_cores"), entry.get(f"{name}_cpu_us_per_event")
    text = "n/a" if cores is None else f"{cores * 100:.1f} % of a core"
    return text + ("" if us is None else f", {us:,.0f} µs per event")


async def recovery(bench: Bench, names: Names, data_dir: str) -> None:
    """The recovery stage on the tables of the memory stage's worker (`names`, its `data_dir`;
    that worker has stopped cleanly)."""
    a, r, say = bench.args, bench.report, bench.say
    topics = changelog_topics(names.app_id)
    records = await count_records(bench.bootstrap, topics)
    r["recovery_records"] = records
    bench.stage(f"recovery: a bare aiokafka consumer reads the {records:,} records of the changelog topics")
    r["changelog_bare_read_rate"] = round(await stages.kafka_consume(bench.bootstrap, topics, records, say), 1)
    runs: dict[str, dict[str, Any]] = {}
    for label, directory in (("kept", data_dir), ("fresh", str(bench.tmp / "worker-rss-fresh"))):
        bench.stage(f"recovery: a worker with its data dir {label}" +
                    (" rebuilds the tables from the changelog" if label == "fresh" else ""))
        port = stages.free_port()
        worker = bench.spawn(start_worker(names, bootstrap=bench.bootstrap, partitions=a.partitions,
                                          data_dir=directory, store="rocksdb://", web_port=port,
                                          extra=shlex.split(a.worker_args)))
        runs[label] = await until_ready(worker, port, say, f"worker (data dir {label})")
        say(f"  data dir {label}: ready after {runs[label]['ready_s']:.2f} s")
        await worker.stop()
    fresh = runs["fresh"]
    restoring = fresh["recovering_s"] or fresh["ready_s"]
    r.update({
        "recovery_kept_s": round(runs["kept"]["ready_s"], 2),
        "recovery_fresh_s": round(fresh["ready_s"], 2),
        "recovery_fresh_restoring_s": round(restoring, 2),
        "recovery_rate": round(records / restoring, 1) if restoring else None,
    })
    say(f"  restored {records:,} records in {restoring:.2f} s ({r['recovery_rate'] or 0:,.0f}/s; the bare "
        f"consumer {r['changelog_bare_read_rate']:,.0f}/s)")
