"""The bench's verdict on a report: each target met or not, the table of figures next to their
limits, and the closing summary (`pipeline bench` prints them after the run).

The targets are what an operator pays for and waits for, as CPU per event and ratios measured in
one run (they hold across the shared machine's fast and slow hours): CPU at the rates a fleet sends,
latency at 100 and 1,000 events/s, the backlog's cost against the pure core's, scale-out, and the
time a restarted worker is blind. The stage at 5,000 events/s offered stays in the report as what
this 2-core machine (brokers, publisher, bridge and worker on it) can carry: bound by the machine,
no target.
"""
from __future__ import annotations

import math
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = {
    "idle_cores": 0.01,  # each process, heartbeats only
    "cores_20": 0.02,  # each process at 20 events/s
    "bridge_us_100": 250.0,  # CPU per event at 100 events/s
    "worker_us_100": 400.0,
    "e2e_p99_ms_100": 100.0,
    "e2e_p99_ms": 250.0,  # at 1,000 events/s offered
    "per_event_1000_vs_backlog": 1.5,  # CPU per event at 1,000/s against the backlog's, each process
    "backlog_vs_core": 2.5,  # CPU per event under a backlog against the pure core's, each process
    "two_workers": 1.8,  # two workers' rate against one's
    "recovery_vs_bare": 0.3,  # a fresh data dir's restore rate against a bare consumer of the changelog
    "recovery_fresh_s": 4.0,
    "recovery_kept_s": 2.0,
    "worker_rss_mb_100k_nodes": 1024.0,
}
HIGH_RATE = 5_000.0  # the offered load of the stage bound by the machine


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v: Any, unit: str = "/s") -> str:
    if _nan(v):
        return "n/a"
    return f"{v:,.0f}{unit}" if unit == "/s" else f"{v:,.1f} {unit}".rstrip()


def percent(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _share(v: Any) -> str:
    """A share of one core: 0.036 -> 3.6 %."""
    return "n/a" if _nan(v) else f"{v * 100:.1f} %"


def _us(v: Any) -> str:
    return "n/a" if _nan(v) else f"{v:,.0f} µs"


def cores_per_1k(r: dict[str, Any], name: str) -> float | None:
    """Cores `name` (bridge or worker) needs per 1,000 events/s at this run's CPU per record."""
    us: Any = r.get(f"{name}_cpu_us_per_event")
    return None if _nan(us) else us / 1000.0


def _ratio(value: Any, limit: Any) -> float | None:
    if _nan(value) or _nan(limit) or limit == 0:
        return None
    return value / limit


def cost_at(r: dict[str, Any], rate: float) -> dict[str, Any]:
    """The `cost` entry of an offered rate (0: idle); {} when the run has none."""
    return next((c for c in r.get("cost") or () if c.get("rate") == rate), {})


def _all(*checks: bool | None) -> bool | None:
    """Met when every part is; None (not measured) when a part was not measured."""
    return None if any(c is None for c in checks) else all(checks)


def _at_most(value: Any, bound: float) -> bool | None:
    return None if _nan(value) else value <= bound


def _below(value: Any, bound: float) -> bool | None:
    return None if _nan(value) else value < bound


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


def _pair(a: Any, b: Any, fmt: Callable[[Any], str]) -> str:
    return f"bridge {fmt(a)}, worker {fmt(b)}"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} x"


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Each target of the benchmark: (what it asks, what this run measured, met? None: not measured)."""
    t = TARGETS
    idle, at20, at100, at1k = cost_at(r, 0), cost_at(r, 20), cost_at(r, 100), cost_at(r, r.get("e2e_rate", 1000))
    core = r.get("core_cpu_us_per_event")
    backlog = {n: r.get(f"{n}_cpu_us_per_event") for n in ("bridge", "worker")}
    vs_backlog = {n: _ratio(at1k.get(f"{n}_cpu_us_per_event"), backlog[n]) for n in backlog}
    vs_core = {n: _ratio(backlog[n], core) for n in backlog}
    pair = _ratio(r.get("two_worker_rate"), r.get("worker_rate"))
    restore = _ratio(r.get("recovery_rate"), r.get("changelog_bare_read_rate"))
    return [
        ("idle: bridge and worker each <= 1 % of a core",
         _pair(idle.get("bridge_cores"), idle.get("worker_cores"), _share),
         _all(_at_most(idle.get("bridge_cores"), t["idle_cores"]), _at_most(idle.get("worker_cores"), t["idle_cores"]))),
        ("at 20 events/s: each <= 2 % of a core", _pair(at20.get("bridge_cores"), at20.get("worker_cores"), _share),
         _all(_at_most(at20.get("bridge_cores"), t["cores_20"]), _at_most(at20.get("worker_cores"), t["cores_20"]))),
        ("at 100 events/s: bridge <= 250 µs, worker <= 400 µs of CPU per event",
         _pair(at100.get("bridge_cpu_us_per_event"), at100.get("worker_cpu_us_per_event"), _us),
         _all(_at_most(at100.get("bridge_cpu_us_per_event"), t["bridge_us_100"]),
              _at_most(at100.get("worker_cpu_us_per_event"), t["worker_us_100"]))),
        ("at 100 events/s: end to end p99 < 100 ms", _latency_text(r, "_100"),
         _latency_below(r, "_100", t["e2e_p99_ms_100"])),
        ("at 1,000 events/s: end to end p99 < 250 ms", _latency_text(r, ""), _latency_below(r, "", t["e2e_p99_ms"])),
        ("at 1,000 events/s: CPU per event each <= 1.5 x its backlog figure",
         _pair(vs_backlog["bridge"], vs_backlog["worker"], _x),
         _all(*(_at_most(v, t["per_event_1000_vs_backlog"]) for v in vs_backlog.values()))),
        ("backlog: bridge and worker each <= 2.5 x the pure core's CPU per event",
         _pair(vs_core["bridge"], vs_core["worker"], _x),
         _all(*(_at_most(v, t["backlog_vs_core"]) for v in vs_core.values()))),
        ("two workers >= 1.8 x one", _x(pair), None if pair is None else pair >= t["two_workers"]),
        ("recovery of a fresh data dir: >= 0.3 x the bare read of its changelog, ready < 4 s",
         f"{_x(restore)}, {_num(r.get('recovery_fresh_s'), 's')}",
         _all(None if restore is None else restore >= t["recovery_vs_bare"],
              _below(r.get("recovery_fresh_s"), t["recovery_fresh_s"]))),
        ("restart with the data dir kept: ready < 2 s", _num(r.get("recovery_kept_s"), "s"),
         _below(r.get("recovery_kept_s"), t["recovery_kept_s"])),
        ("worker RSS at 100,000 nodes < 1 GB", _num(r.get("worker_rss_mb_100k_nodes"), "MB"),
         _below(r.get("worker_rss_mb_100k_nodes"), t["worker_rss_mb_100k_nodes"])),
    ]


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def _cost_rows(r: dict[str, Any], checks: dict[str, bool | None]) -> list[tuple[str, ...]]:
    """One row per offered rate: the share of a core and the CPU per event of each process."""
    rows: list[tuple[str, ...]] = []
    target = {0: ("<= 1 % of a core each", checks["idle: bridge and worker each <= 1 % of a core"]),
              20: ("<= 2 % of a core each", checks["at 20 events/s: each <= 2 % of a core"]),
              100: ("bridge <= 250 µs, worker <= 400 µs",
                    checks["at 100 events/s: bridge <= 250 µs, worker <= 400 µs of CPU per event"])}
    for c in r.get("cost") or ():
        rate = c.get("rate", 0)
        offered = "idle (heartbeats only)" if not rate else f"at {rate:,.0f} events/s"
        value = (f"bridge {_share(c.get('bridge_cores'))}, {_us(c.get('bridge_cpu_us_per_event'))}; "
                 f"worker {_share(c.get('worker_cores'))}, {_us(c.get('worker_cpu_us_per_event'))}")
        if not rate:
            value = f"bridge {_share(c.get('bridge_cores'))}; worker {_share(c.get('worker_cores'))}"
        aim, ok = target.get(rate, ("", None))
        limit = f"relayed {_num(c.get('relayed_per_s'))}" if rate else ""
        if c.get("bare_amqp_cpu_us_per_event") is not None:
            limit += f"; bare aio-pika consumer {_us(c['bare_amqp_cpu_us_per_event'])}"
        rows.append((f"cost {offered}", value, limit, "", aim, _met(ok) if aim else ""))
    return rows


def table(r: dict[str, Any]) -> str:
    """figure | value | limit | ratio | target | met?"""
    num, met = _num, _met
    checks = {name: ok for name, _, ok in targets(r)}
    drain: Any = r.get("amqp_drain_rate")
    produce: Any = r.get("kafka_produce_rate")
    bridge_limit = None if _nan(drain) or _nan(produce) else min(drain, produce)
    limit_name = "aio-pika drain" if bridge_limit is not None and bridge_limit == drain else "aiokafka produce"
    core = r.get("core_cpu_us_per_event")
    pair_ratio = _ratio(r.get("two_worker_rate"), r.get("worker_rate"))
    restore = _ratio(r.get("recovery_rate"), r.get("changelog_bare_read_rate"))

    def ratio(v: float | None) -> str:
        return f"{v:.2f}" if v is not None else "n/a"

    def latency(suffix: str, target: str, check: str | None) -> list[tuple[str, ...]]:
        if check is None and r.get("e2e_p99_ms" + suffix) is None and r.get("e2e_operations" + suffix) is None:
            return []  # the stage bound by the machine, not run
        offered = f"{r.get('e2e_offered_rate' + suffix) or 0:,.0f}/s"
        cores = ", ".join(f"{name} {r[key]:.2f}" for name in ("bridge", "worker")
                          if (key := f"e2e_{name}_cores{suffix}") in r and r[key] is not None)
        return [
            (f"end to end p50 at {offered}", num(r.get("e2e_p50_ms" + suffix), "ms"), "", "", "", ""),
            (f"end to end p99 at {offered}", _latency_text(r, suffix), "", "", target,
             met(checks[check]) if check else ""),
            ("  of which bridge (publish->relay) p99", num(r.get("e2e_bridge_p99_ms" + suffix), "ms"), "", "", "", ""),
            ("  of which worker (relay->operation) p99", num(r.get("e2e_worker_p99_ms" + suffix), "ms"), "", "", "", ""),
            ("  machine busy while publishing", percent(r.get("e2e_machine_busy" + suffix)),
             f"{r.get('cpus') or '?'} cores" + (f" (cores used: {cores})" if cores else ""), "", "", ""),
        ]

    rows = [
        ("figure", "value", "limit", "ratio", "target", "met?"),
        *_cost_rows(r, checks),
        *latency("_100", "< 100 ms", "at 100 events/s: end to end p99 < 100 ms"),
        *latency("", "< 250 ms", "at 1,000 events/s: end to end p99 < 250 ms"),
        ("CPU per event at 1,000/s against the backlog's",
         targets_value(r, "at 1,000 events/s: CPU per event each <= 1.5 x its backlog figure"), "", "",
         "<= 1.5 x each", met(checks["at 1,000 events/s: CPU per event each <= 1.5 x its backlog figure"])),
        ("bridge relay RabbitMQ->Kafka (backlog)", num(r.get("bridge_rate")),
         f"{num(bridge_limit)} ({limit_name})", ratio(_ratio(r.get("bridge_rate"), bridge_limit)), "", ""),
        ("  bridge CPU per record", num(r.get("bridge_cpu_us_per_event"), "µs"), f"{num(core, 'µs')} (pure core)",
         ratio(_ratio(r.get("bridge_cpu_us_per_event"), core)), "<= 2.5 x core",
         met(checks["backlog: bridge and worker each <= 2.5 x the pure core's CPU per event"])),
        ("  bare aio-pika drain", num(drain), "", "", "", ""),
        ("  bare aiokafka produce", num(produce), "", "", "", ""),
        ("worker, every agent on (backlog)", num(r.get("worker_rate")),
         f"{num(r.get('kafka_consume_rate'))} (aiokafka consume)",
         ratio(_ratio(r.get("worker_rate"), r.get("kafka_consume_rate"))), "", ""),
        ("  worker CPU per record", num(r.get("worker_cpu_us_per_event"), "µs"), f"{num(core, 'µs')} (pure core)",
         ratio(_ratio(r.get("worker_cpu_us_per_event"), core)), "<= 2.5 x core",
         met(checks["backlog: bridge and worker each <= 2.5 x the pure core's CPU per event"])),
        ("two workers, one group", num(r.get("two_worker_rate")),
         f"{num(None if _nan(r.get('worker_rate')) else 2 * r['worker_rate'])} (2 x one worker)",
         ratio(None if pair_ratio is None else pair_ratio / 2), ">= 1.8 x one", met(checks["two workers >= 1.8 x one"])),
        *latency("_5k", "none: bound by the machine", None),
        ("CPU bridge + worker need at 5,000/s", _cores_needed_text(r), f"{r.get('cpus') or '?'} cores (machine)",
         "", "", ""),
        (f"recovery of {r.get('recovery_records') or 0:,} changelog records, fresh data dir",
         f"{num(r.get('recovery_fresh_s'), 's')} to ready, {num(r.get('recovery_rate'))}",
         f"{num(r.get('changelog_bare_read_rate'))} (bare aiokafka read)", ratio(restore), ">= 0.30 x, < 4 s",
         met(checks["recovery of a fresh data dir: >= 0.3 x the bare read of its changelog, ready < 4 s"])),
        ("restart, data dir kept", f"{num(r.get('recovery_kept_s'), 's')} to ready", "", "", "< 2 s",
         met(checks["restart with the data dir kept: ready < 2 s"])),
        ("bridge peak RSS", num(r.get("bridge_peak_rss_mb"), "MB"), "", "", "", ""),
        ("worker peak RSS", num(r.get("worker_peak_rss_mb"), "MB"), "", "", "", ""),
        (f"worker RSS at {r.get('rss_nodes', 0):,} nodes", num(r.get("worker_rss_mb_100k_nodes"), "MB"), "", "",
         "< 1,024 MB", met(checks["worker RSS at 100,000 nodes < 1 GB"])),
        ("core: decode+classify+mask+Avro, 1 core", num(r.get("core_rate")), num(core, "µs") + " per event", "", "", ""),
        ("oslo.messaging Notifier publish", num(r.get("oslo_publish_rate")), "", "", "", ""),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def targets_value(r: dict[str, Any], name: str) -> str:
    return next(value for what, value, _ in targets(r) if what == name)


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
    measured = sum(1 for _, _, ok in checks if ok is not None)
    lines = [f"{met} of {len(checks)} targets met" + (f" ({len(checks) - measured} not measured)"
                                                       if measured < len(checks) else "") + ":"]
    lines += [f"  {_met(ok):>3}  {name}: {value}" for name, value, ok in checks]
    for c in r.get("cost") or ():
        if c.get("rate"):
            lines.append(f"cost at {c['rate']:,.0f} events/s offered ({_num(c.get('relayed_per_s'))} relayed): "
                         f"bridge {_share(c.get('bridge_cores'))} of a core, {_us(c.get('bridge_cpu_us_per_event'))} "
                         f"per event; worker {_share(c.get('worker_cores'))}, {_us(c.get('worker_cpu_us_per_event'))}"
                         + (f" (a bare aio-pika consumer: {_us(c['bare_amqp_cpu_us_per_event'])} per event)"
                            if c.get("bare_amqp_cpu_us_per_event") is not None else ""))
    if r.get("recovery_records"):
        lines.append(f"recovery: {r['recovery_records']:,} changelog records, fresh data dir ready in "
                     f"{_num(r.get('recovery_fresh_s'), 's')} (restored at {_num(r.get('recovery_rate'))}, a bare "
                     f"consumer read them at {_num(r.get('changelog_bare_read_rate'))}); data dir kept: "
                     f"{_num(r.get('recovery_kept_s'), 's')}")
    bridge, worker, needed = cores_per_1k(r, "bridge"), cores_per_1k(r, "worker"), cores_needed(r)
    if needed is not None:
        lines.append(f"CPU per 1,000 events/s under a backlog: bridge {bridge:.2f} cores, worker {worker:.2f}; at "
                     f"{HIGH_RATE:,.0f}/s the two need {needed:.2f} cores, of this machine's {r.get('cpus') or '?'}, "
                     f"before the publisher and the brokers (the 5,000/s stage is bound by the machine: no target)")
    if r.get("wall_seconds") is not None:
        lines.append(f"run {r.get('run')}: {r['wall_seconds']:,.0f} s on {r.get('cpus')} cores, load average "
                     f"{(r.get('load_average_at_start') or [0])[0]:.1f} at start, "
                     f"{(r.get('load_average_at_end') or [0])[0]:.1f} at the end (a machine shared with other "
                     f"work: compare CPU per event and ratios across runs, not rates)")
    return "\n".join(lines)


def profile_top(path: Path, count: int = 15) -> str:
    if not path.exists():
        return f"(no profile at {path}: the process did not exit normally)"
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(count)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())[-4000:]
