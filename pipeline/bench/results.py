"""The bench's verdict on a report: each target met or not, the table of figures next to their
limits, and the closing summary (`pipeline bench` prints them after the run)."""
from __future__ import annotations

import math
import pstats
from pathlib import Path
from typing import Any

TARGETS = {
    "bridge_ratio": 0.8,  # bridge >= 0.8 x the lower of its two limits
    "worker_ratio": 0.3,  # worker >= 0.3 x the bare consumer
    "worker_rate": 10_000.0,
    "e2e_p99_ms": 250.0,  # at 1,000 events/s offered
    "e2e_p99_ms_5k": 1000.0,  # at 5,000 events/s offered
    "worker_rss_mb_100k_nodes": 1024.0,
}
HIGH_RATE = 5_000.0  # the offered load of the second end-to-end target


def _num(v: Any, unit: str = "/s") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:,.0f}{unit}" if unit == "/s" else f"{v:,.1f} {unit}".rstrip()


def percent(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def cores_per_1k(r: dict[str, Any], name: str) -> float | None:
    """Cores `name` (bridge or worker) needs per 1,000 events/s at this run's CPU per record."""
    us = r.get(f"{name}_cpu_us_per_event")
    return None if us is None or math.isnan(us) else us / 1000.0


def _ratio(value: float | None, limit: float | None) -> float | None:
    if value is None or limit in (None, 0) or math.isnan(value) or math.isnan(limit):
        return None
    return value / limit


def _below(value: float | None, bound: float) -> bool | None:
    return None if value is None or math.isnan(value) else value < bound


def _latency_below(r: dict[str, Any], suffix: str, bound_ms: float) -> bool | None:
    """p99 under the bound. An operation record still missing when the stage ended took longer than
    the stage's settling time (15 s), so more than 1 % of them missing is a miss whatever the p99 of
    the others says."""
    operations, matched = r.get("e2e_operations" + suffix), r.get("e2e_matched" + suffix)
    if operations and matched is not None and matched < 0.99 * operations:
        return False
    return _below(r.get("e2e_p99_ms" + suffix), bound_ms)


def _latency_text(r: dict[str, Any], suffix: str) -> str:
    text = _num(r.get("e2e_p99_ms" + suffix), "ms")
    operations, matched = r.get("e2e_operations" + suffix), r.get("e2e_matched" + suffix)
    if operations and matched is not None and matched < operations:
        text += f" ({matched:,} of {operations:,} operations seen)"
    return text


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Each target of the benchmark: (what it asks, what this run measured, met? None: not measured)."""
    bridge_ratio = _ratio(r.get("bridge_rate"), min(r["amqp_drain_rate"], r["kafka_produce_rate"]))
    worker_ratio = _ratio(r.get("worker_rate"), r.get("kafka_consume_rate"))
    worker_ok = None if worker_ratio is None else (worker_ratio >= TARGETS["worker_ratio"]
                                                   and r["worker_rate"] >= TARGETS["worker_rate"])
    return [
        ("bridge >= 0.80 x its lower limit", "n/a" if bridge_ratio is None else f"{bridge_ratio:.2f} x",
         None if bridge_ratio is None else bridge_ratio >= TARGETS["bridge_ratio"]),
        ("worker >= 10,000/s and >= 0.30 x the bare consumer",
         f"{_num(r.get('worker_rate'))}, " + ("n/a" if worker_ratio is None else f"{worker_ratio:.2f} x"), worker_ok),
        ("end to end p99 < 250 ms at 1,000/s", _latency_text(r, ""), _latency_below(r, "", TARGETS["e2e_p99_ms"])),
        ("end to end p99 < 1 s at 5,000/s", _latency_text(r, "_5k"),
         _latency_below(r, "_5k", TARGETS["e2e_p99_ms_5k"])),
        ("worker RSS at 100,000 nodes < 1 GB", _num(r.get("worker_rss_mb_100k_nodes"), "MB"),
         _below(r.get("worker_rss_mb_100k_nodes"), TARGETS["worker_rss_mb_100k_nodes"])),
    ]


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def table(r: dict[str, Any]) -> str:
    """figure | value | limit | ratio | target | met?"""
    num, met = _num, _met
    checks = {name: ok for name, _, ok in targets(r)}
    bridge_limit = min(r["amqp_drain_rate"], r["kafka_produce_rate"])
    bridge_ratio = _ratio(r["bridge_rate"], bridge_limit)
    worker_ratio = _ratio(r["worker_rate"], r["kafka_consume_rate"])
    pair_ratio = _ratio(r.get("two_worker_rate"), r["worker_rate"])
    limit_name = "aio-pika drain" if r["amqp_drain_rate"] <= r["kafka_produce_rate"] else "aiokafka produce"

    def ratio(v: float | None) -> str:
        return f"{v:.2f}" if v is not None else "n/a"

    def latency(suffix: str, target: str, check: str) -> list[tuple[str, ...]]:
        offered = f"{r.get('e2e_offered_rate' + suffix) or 0:,.0f}/s"
        cores = ", ".join(f"{name} {r[key]:.2f}" for name in ("bridge", "worker")
                          if (key := f"e2e_{name}_cores{suffix}") in r and r[key] is not None)
        return [
            (f"end to end p50 at {offered}", num(r.get("e2e_p50_ms" + suffix), "ms"), "", "", "", ""),
            (f"end to end p99 at {offered}", _latency_text(r, suffix), "", "", target, met(checks[check])),
            ("  of which bridge (publish->relay) p99", num(r.get("e2e_bridge_p99_ms" + suffix), "ms"), "", "", "", ""),
            ("  of which worker (relay->operation) p99", num(r.get("e2e_worker_p99_ms" + suffix), "ms"), "", "", "", ""),
            ("  machine busy while publishing", percent(r.get("e2e_machine_busy" + suffix)),
             f"{r.get('cpus') or '?'} cores" + (f" (cores used: {cores})" if cores else ""), "", "", ""),
        ]

    rows = [
        ("figure", "value", "limit", "ratio", "target", "met?"),
        ("bridge relay RabbitMQ->Kafka", num(r["bridge_rate"]), f"{num(bridge_limit)} ({limit_name})",
         ratio(bridge_ratio), ">= 0.80 x limit", met(checks["bridge >= 0.80 x its lower limit"])),
        ("  bridge CPU per record", num(r.get("bridge_cpu_us_per_event"), "µs"), "", "", "", ""),
        ("  bare aio-pika drain", num(r["amqp_drain_rate"]), "", "", "", ""),
        ("  bare aiokafka produce", num(r["kafka_produce_rate"]), "", "", "", ""),
        ("worker, every agent on", num(r["worker_rate"]), f"{num(r['kafka_consume_rate'])} (aiokafka consume)",
         ratio(worker_ratio), ">= 0.30 x limit, >= 10,000/s",
         met(checks["worker >= 10,000/s and >= 0.30 x the bare consumer"])),
        ("  worker CPU per record", num(r.get("worker_cpu_us_per_event"), "µs"), "", "", "", ""),
        ("two workers, one group", num(r.get("two_worker_rate")), f"{num(2 * r['worker_rate'])} (2 x one worker)",
         ratio(None if pair_ratio is None else pair_ratio / 2), "", ""),
        *latency("", "< 250 ms", "end to end p99 < 250 ms at 1,000/s"),
        *latency("_5k", "< 1,000 ms", "end to end p99 < 1 s at 5,000/s"),
        ("CPU bridge + worker need at 5,000/s", _cores_needed_text(r), f"{r.get('cpus') or '?'} cores (machine)",
         "", "", ""),
        ("bridge peak RSS", num(r.get("bridge_peak_rss_mb"), "MB"), "", "", "", ""),
        ("worker peak RSS", num(r.get("worker_peak_rss_mb"), "MB"), "", "", "", ""),
        (f"worker RSS at {r.get('rss_nodes', 0):,} nodes", num(r.get("worker_rss_mb_100k_nodes"), "MB"), "", "",
         "< 1,024 MB", met(checks["worker RSS at 100,000 nodes < 1 GB"])),
        ("core: decode+classify+mask+Avro, 1 core", num(r.get("core_rate")), "", "", "", ""),
        ("oslo.messaging Notifier publish", num(r.get("oslo_publish_rate")), "", "", "", ""),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def cores_needed(r: dict[str, Any], rate: float = HIGH_RATE) -> float | None:
    """Cores the bridge and the worker together need at `rate` events/s, at this run's CPU per
    record (publisher and brokers not counted)."""
    bridge, worker = cores_per_1k(r, "bridge"), cores_per_1k(r, "worker")
    return None if bridge is None or worker is None else (bridge + worker) * rate / 1000.0


def _cores_needed_text(r: dict[str, Any]) -> str:
    needed = cores_needed(r)
    return "n/a" if needed is None else f"{needed:.2f} cores"


def summary(r: dict[str, Any]) -> str:
    """The closing lines: how many targets were met, each with its figure, and the run's frame."""
    checks = targets(r)
    met = sum(1 for _, _, ok in checks if ok)
    lines = [f"{met} of {len(checks)} targets met:"]
    lines += [f"  {_met(ok):>3}  {name}: {value}" for name, value, ok in checks]
    bridge, worker, needed = cores_per_1k(r, "bridge"), cores_per_1k(r, "worker"), cores_needed(r)
    if needed is not None:
        lines.append(f"CPU per 1,000 events/s: bridge {bridge:.2f} cores, worker {worker:.2f}; at {HIGH_RATE:,.0f}/s "
                     f"the two need {needed:.2f} cores, of this machine's {r.get('cpus') or '?'}, before the "
                     f"publisher and the brokers")
    if r.get("wall_seconds") is not None:
        lines.append(f"run {r.get('run')}: {r['wall_seconds']:,.0f} s on {r.get('cpus')} cores, load average "
                     f"{(r.get('load_average_at_start') or [0])[0]:.1f} at start, "
                     f"{(r.get('load_average_at_end') or [0])[0]:.1f} at the end")
    return "\n".join(lines)


def profile_top(path: Path, count: int = 15) -> str:
    if not path.exists():
        return f"(no profile at {path}: the process did not exit normally)"
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(count)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())[-4000:]
