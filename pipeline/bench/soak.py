"""`pipeline bench --soak SECONDS`: a bridge and a worker at a fleet's rate for a long while, the
worker restarted (SIGTERM, the same data dir) every `--soak-restart-every` seconds, as a rolling
update does. Not part of `make bench`.

Every minute the events offered in it are timed end to end (the cost stage's measuring, one minute
at a time), and the RSS (VmRSS) of both processes is sampled. At the end the operations and alerts
topics are read whole: an operation record whose `op_id` appears twice was published twice
(doubled); a terminal event whose operation record did not come within its minute's settling time
is late if the record came afterwards, alerted if an alert carries its message id instead (an end
without a start), and lost if neither. The report (`soak.json` beside the bench's report) has the
minute-by-minute figures and the verdict: RSS growth from the first `--soak-restart-every` seconds
to the end (the target: < 10 %), lost and doubled operations (the target: none).
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.simulate.outputs import Topics as OsloTopics

from . import stages
from .procs import Names, Proc, end_run, start_bridge, start_worker
from .records import Workload
from .stages.cost import cost_entry, until_ready

__all__ = ["run", "verdict"]

CHUNK_S = 60.0


def verdict(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """RSS growth of each process after the warm-up, from the per-minute samples (`at_s`,
    `bridge_rss_mb`, `worker_rss_mb`, `cycle`: the worker's restarts so far), and the terminal
    events whose operation record did not come within their minute (`unmatched`: late or lost,
    `_Published.account` tells which).

    The bridge runs throughout: its first sample after the warm-up against its last. The worker is
    restarted every cycle and its RSS climbs within one (its RocksDB cache and memtables fill), so a sample
    just after a restart against one ten minutes into a cycle says nothing: like is compared with
    like, the RSS at the end of the first cycle after the warm-up against the end of the last (a
    worker never restarted is measured as the bridge is)."""
    out: dict[str, Any] = {}
    after = [s for s in samples if s["at_s"] >= warmup_s] or samples[-1:]
    first, last = after[0]["bridge_rss_mb"], samples[-1]["bridge_rss_mb"]
    out["bridge_rss_growth"] = round(last / first - 1, 4) if first and last else None
    ends: dict[int, dict[str, Any]] = {}  # cycle -> its last sample
    for s in samples:
        ends[s.get("cycle", 0)] = s
    # never restarted: like the bridge
    series = after if len(ends) < 2 else [s for s in ends.values() if s["at_s"] >= warmup_s] or samples[-1:]
    first, last = series[0]["worker_rss_mb"], series[-1]["worker_rss_mb"]
    out["worker_rss_growth"] = round(last / first - 1, 4) if first and last else None
    out["worker_rss_mb_cycle_ends"] = [round(s["worker_rss_mb"] or 0, 1) for s in ends.values()]
    out["unmatched"] = sum(s["operations"] - s["matched"] for s in samples)
    out["operations"] = sum(s["operations"] for s in samples)
    return out


@dataclass
class _Published:
    """What the worker published over the whole soak (its operations and alerts topics read whole)."""

    records: int = 0
    op_ids: set[str] = field(default_factory=set)
    ends: set[str] = field(default_factory=set)  # the end_message_id of every operation record
    alerted: set[str] = field(default_factory=set)  # the message_id of every alert (an orphan end's is its own)

    def account(self, unmatched: set[str]) -> dict[str, Any]:
        """The terminal events whose record did not come within their minute's settling time, told
        apart: `late` came later, `alerted` got an alert instead (an end with no start), `lost` nothing."""
        late = unmatched & self.ends
        alerted = (unmatched - late) & self.alerted
        return {"operation_records": self.records, "doubled": self.records - len(self.op_ids),
                "unmatched": len(unmatched), "late": len(late), "alerted": len(alerted),
                "lost": len(unmatched - late - alerted), "lost_ids": sorted(unmatched - late - alerted)[:20]}


async def _published(bootstrap: str, operations: str, alerts: str) -> _Published:
    from aiokafka import AIOKafkaConsumer

    from pipeline import codec

    out = _Published()
    consumer = AIOKafkaConsumer(operations, alerts, bootstrap_servers=bootstrap.split(","), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=3000, max_records=5000)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    value = codec.decode_value(record.value)
                    if tp.topic == operations:
                        out.records += 1
                        out.op_ids.add(str(value.get("op_id")))
                        out.ends.add(str(value.get("end_message_id") or ""))
                    else:
                        out.alerted.add(str(value.get("message_id") or ""))
    finally:
        await consumer.stop()
    return out


async def run(args: argparse.Namespace, amqp_url: str, say: stages.Say, tmp: Any) -> dict[str, Any]:
    from pipeline.bridge.relay import catalog_topics

    a = args
    names = Names(run=f"soak{Names().run}")
    work = Workload(a.nodes, a.images, seed=a.seed, topics=OsloTopics(ironic=names.ironic_topic,
                                                                      glance=names.glance_topic))
    bootstrap = a.kafka_bootstrap_servers
    await stages.declare_queue(amqp_url, names.queue)
    port = stages.free_port()
    data_dir = str(tmp / "worker-soak")

    def new_worker() -> Proc:
        return start_worker(names, bootstrap=bootstrap, partitions=a.partitions, data_dir=data_dir,
                            store="rocksdb://", web_port=port, extra=shlex.split(a.worker_args))

    bridge = start_bridge(names, amqp_url=amqp_url, bootstrap=bootstrap, partitions=a.partitions,
                          extra=shlex.split(a.bridge_args))
    worker = new_worker()
    samples: list[dict[str, Any]] = []
    unmatched: set[str] = set()
    restarts = 0
    try:
        await bridge.wait_for("relaying from", 120)
        await until_ready(worker, port, say, "worker")
        started = time.monotonic()
        last_restart = started
        while (elapsed := time.monotonic() - started) < a.soak:
            if time.monotonic() - last_restart >= a.soak_restart_every:
                say(f"[{elapsed:6.0f}s] soak: the worker restarted (SIGTERM, the same data dir)")
                await worker.stop()
                worker.cleanup()
                worker = new_worker()
                ready = await until_ready(worker, port, say, "worker (restarted)")
                restarts += 1
                last_restart = time.monotonic()
                say(f"  ready again after {ready['ready_s']:.1f} s")
            e2e = await stages.end_to_end(amqp_url, bootstrap, f"{names.output_prefix}operations",
                                          work.publish_list(int(a.soak_rate * CHUNK_S)), a.soak_rate, lambda _: None,
                                          relay_topics=catalog_topics(names.topic_prefix),
                                          pids={"bridge": bridge.pid, "worker": worker.pid})
            share = {key[4:]: value for key, value in e2e.items() if key.startswith("e2e_")}
            entry = cost_entry(a.soak_rate, e2e["e2e_publish_seconds"], share, e2e["e2e_relayed"])
            sample = {"at_s": round(time.monotonic() - started, 1), "bridge_rss_mb": bridge.sample(),
                      "worker_rss_mb": worker.sample(), "operations": e2e["e2e_operations"],
                      "matched": e2e["e2e_matched"], "p99_ms": e2e["e2e_p99_ms"], "cycle": restarts, **entry}
            samples.append(sample)
            unmatched.update(e2e["e2e_unmatched_ids"])
            say(f"[{sample['at_s']:6.0f}s] soak: RSS bridge {sample['bridge_rss_mb'] or 0:.1f} MB, worker "
                f"{sample['worker_rss_mb'] or 0:.1f} MB; {sample['matched']:,} of {sample['operations']:,} "
                f"operations, p99 {sample['p99_ms']} ms; CPU per event bridge {entry['bridge_cpu_us_per_event']} µs, "
                f"worker {entry['worker_cpu_us_per_event']} µs")
        published = await _published(bootstrap, f"{names.output_prefix}operations", f"{names.output_prefix}alerts")
    finally:
        await end_run(names, amqp_url, bootstrap, bridge, worker)
    result = {"soak_seconds": a.soak, "rate": a.soak_rate, "restart_every_s": a.soak_restart_every,
              "restarts": restarts, **verdict(samples, a.soak_restart_every), **published.account(unmatched),
              "samples": samples}
    path = a.report.parent / "soak.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(path)
    return result
