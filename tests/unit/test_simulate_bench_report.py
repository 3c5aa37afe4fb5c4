"""The benchmark's table: each figure next to its limit, the ratio, the target and whether it is met."""
from __future__ import annotations

from pipeline.bench import command, stages


def cost(rate: float, bridge_cores: float, worker_cores: float, relayed: float | None = None) -> dict:
    from pipeline.bench.stages.cost import cost_entry

    relayed = rate if relayed is None else relayed
    return cost_entry(rate, 20.0, {"bridge_cores": bridge_cores, "worker_cores": worker_cores}, int(relayed * 20))


def report(**overrides) -> dict:
    """A run that meets every target."""
    base = {
        "bridge_rate": 8000.0, "amqp_drain_rate": 10000.0, "kafka_produce_rate": 20000.0,
        "worker_rate": 12000.0, "kafka_consume_rate": 30000.0, "e2e_p50_ms": 40.0, "e2e_p99_ms": 120.0,
        "e2e_offered_rate": 1000.0, "e2e_p50_ms_100": 15.0, "e2e_p99_ms_100": 60.0, "e2e_offered_rate_100": 100.0,
        "bridge_peak_rss_mb": 60.0, "worker_peak_rss_mb": 300.0,
        "worker_rss_mb_100k_nodes": 700.0, "rss_nodes": 100000, "core_rate": 20000.0, "core_cpu_us_per_event": 50.0,
        "oslo_publish_rate": 1200.0,
        "e2e_p50_ms_5k": 200.0, "e2e_p99_ms_5k": 800.0, "e2e_offered_rate_5k": 5000.0, "two_worker_rate": 22000.0,
        "worker_cpu_us_per_event": 100.0, "bridge_cpu_us_per_event": 90.0, "e2e_rate": 1000.0,
        # bridge 0.5 %, worker 0.8 % idle; at 100/s 2.0 % = 200 µs and 3.5 % = 350 µs; at 1,000/s 120 and 140 µs
        "cost": [cost(0, 0.005, 0.008), cost(20, 0.015, 0.019), cost(100, 0.02, 0.035), cost(300, 0.04, 0.06),
                 cost(1000, 0.12, 0.14)],
        "recovery_records": 118_000, "recovery_fresh_s": 3.2, "recovery_kept_s": 1.5, "recovery_rate": 90_000.0,
        "changelog_bare_read_rate": 250_000.0,
    }
    base.update(overrides)
    return base


def rows(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def test_all_targets_met() -> None:
    t = rows(command.table(report()))
    assert t["cost idle (heartbeats only)"] == ["bridge 0.5 %; worker 0.8 %", "", "", "<= 1 % of a core each", "yes"]
    assert t["cost at 20 events/s"][0] == "bridge 1.5 %, 750 µs; worker 1.9 %, 950 µs"
    assert t["cost at 20 events/s"][1] == "relayed 20/s" and t["cost at 20 events/s"][4] == "yes"
    assert t["cost at 100 events/s"][0] == "bridge 2.0 %, 200 µs; worker 3.5 %, 350 µs"
    assert t["cost at 100 events/s"][3:] == ["bridge <= 250 µs, worker <= 400 µs", "yes"]
    assert t["cost at 300 events/s"][3:] == ["", ""]  # no target at 300/s
    assert t["end to end p99 at 100/s"][3:] == ["< 100 ms", "yes"]
    assert t["end to end p99 at 1,000/s"][3:] == ["< 250 ms", "yes"]
    assert t["CPU per event at 1,000/s against the backlog's"][0] == "bridge 1.33 x, worker 1.40 x"
    assert t["bridge CPU per record"][:3] == ["90.0 µs", "50.0 µs (pure core)", "1.80"]
    assert t["worker CPU per record"][2:] == ["2.00", "<= 2.5 x core", "yes"]
    assert t["two workers, one group"][:3] == ["22,000/s", "24,000/s (2 x one worker)", "0.92"]
    assert t["end to end p99 at 5,000/s"][3:] == ["none: bound by the machine", ""]
    recovery = t["recovery of 118,000 changelog records, fresh data dir"]
    assert recovery == ["3.2 s to ready, 90,000/s", "250,000/s (bare aiokafka read)", "0.36", ">= 0.30 x, < 4 s", "yes"]
    assert t["restart, data dir kept"] == ["1.5 s to ready", "", "", "< 2 s", "yes"]
    assert t["worker RSS at 100,000 nodes"][4] == "yes"
    assert command.summary(report()).splitlines()[0] == "11 of 11 targets met:"


def test_cost_of_a_rate_is_its_share_of_a_core_over_the_events_relayed() -> None:
    """0.11 of a core while 97.4 events/s were relayed: 1,129 µs per event; idle has no per-event figure."""
    from pipeline.bench.stages.cost import cost_entry

    entry = cost_entry(100, 20.0, {"bridge_cores": 0.08, "worker_cores": 0.11, "machine_busy": 0.5}, 1948)
    assert entry["relayed_per_s"] == 97.4 and entry["worker_cpu_us_per_event"] == 1129.4
    assert entry["bridge_cpu_us_per_event"] == 821.4 and entry["machine_busy"] == 0.5
    idle = cost_entry(0, 20.0, {"bridge_cores": 0.002, "worker_cores": 0.009}, 0)
    assert idle["bridge_cpu_us_per_event"] is None and idle["worker_cores"] == 0.009
    gone = cost_entry(20, 20.0, {"bridge_cores": None, "worker_cores": 0.01}, 400)
    assert gone["bridge_cpu_us_per_event"] is None and gone["worker_cpu_us_per_event"] == 500.0


def test_each_cost_target_misses_on_its_own_figure() -> None:
    misses = report(cost=[cost(0, 0.002, 0.011), cost(20, 0.036, 0.079), cost(100, 0.114, 0.232),
                          cost(1000, 0.30, 0.50)], e2e_p99_ms_100=440.0, e2e_p99_ms=5600.0)
    t = rows(command.table(misses))
    assert t["cost idle (heartbeats only)"][4] == "NO"  # the worker's 1.1 %
    assert t["cost at 20 events/s"][0] == "bridge 3.6 %, 1,800 µs; worker 7.9 %, 3,950 µs"
    assert t["cost at 20 events/s"][4] == "NO" and t["cost at 100 events/s"][4] == "NO"
    assert t["end to end p99 at 100/s"][4] == "NO" and t["end to end p99 at 1,000/s"][4] == "NO"
    assert t["CPU per event at 1,000/s against the backlog's"] == ["bridge 3.33 x, worker 5.00 x", "", "",
                                                                   "<= 1.5 x each", "NO"]
    lines = command.summary(misses).splitlines()
    assert lines[0] == "5 of 11 targets met:"
    assert "   NO  at 20 events/s: each <= 2 % of a core: bridge 3.6 %, worker 7.9 %" in lines
    assert ("cost at 100 events/s offered (100/s relayed): bridge 11.4 % of a core, 1,140 µs per event; "
            "worker 23.2 %, 2,320 µs") in lines


def test_backlog_scale_out_and_recovery_misses() -> None:
    t = rows(command.table(report(bridge_cpu_us_per_event=166.0, worker_cpu_us_per_event=142.0,
                                  core_cpu_us_per_event=39.0, two_worker_rate=20_000.0, recovery_fresh_s=11.4,
                                  recovery_rate=10_400.0, changelog_bare_read_rate=274_000.0, recovery_kept_s=1.8)))
    assert t["bridge CPU per record"][2:] == ["4.26", "<= 2.5 x core", "NO"]
    assert t["two workers, one group"][2:] == ["0.83", ">= 1.8 x one", "NO"]
    assert t["recovery of 118,000 changelog records, fresh data dir"][2:] == ["0.04", ">= 0.30 x, < 4 s", "NO"]
    assert t["restart, data dir kept"][4] == "yes"
    fast_but_late = rows(command.table(report(recovery_fresh_s=4.5)))
    assert fast_but_late["recovery of 118,000 changelog records, fresh data dir"][4] == "NO"


def test_a_run_of_some_stages_says_what_was_not_measured() -> None:
    only_cost = {k: v for k, v in report().items() if k.startswith(("e2e_", "cost", "core"))}
    lines = command.summary(only_cost).splitlines()
    assert lines[0] == "5 of 11 targets met (6 not measured):"
    assert "  n/a  two workers >= 1.8 x one: n/a" in lines
    assert rows(command.table(only_cost))["bridge relay RabbitMQ->Kafka (backlog)"][:2] == ["n/a", "n/a (aiokafka produce)"]


def test_operations_never_seen_in_time_are_a_latency_miss() -> None:
    """3 % of the operation records still missing after the settling time: they took over 15 s,
    so the p99 of all cannot be under 250 ms, whatever the p99 of those seen says."""
    r = report(e2e_p99_ms=200.0, e2e_operations=1000, e2e_matched=970)
    t = rows(command.table(r))
    assert t["end to end p99 at 1,000/s"][0] == "200.0 ms (970 of 1,000 operations seen)"
    assert t["end to end p99 at 1,000/s"][4] == "NO"
    assert rows(command.table(report(e2e_p99_ms=200.0, e2e_operations=1000,
                                     e2e_matched=995)))["end to end p99 at 1,000/s"][4] == "yes"


def test_window_rate_and_cpu_per_record_from_the_first_record_on() -> None:
    w = stages.Window()
    w.add(10.0, 0, 3.0)  # starting up: not part of the figures
    w.add(11.0, 100, 4.0)
    w.add(12.0, 1100, 4.1)
    w.add(13.0, 2100, 4.2)
    assert w.records == 2000 and w.rate == 1000.0
    assert abs(w.cpu_us_per_event - 100.0) < 1e-6  # 0.2 CPU seconds over 2,000 records


def test_a_backlog_taken_between_two_samples_is_measured_from_the_last_sample_without_records() -> None:
    w = stages.Window()
    w.add(10.0, 0, 3.0)  # starting up: not part of the figures
    w.add(10.5, 0, 3.2)
    w.add(11.0, 12_000, 3.8)  # a fast machine: the whole backlog within one sampling interval
    assert w.records == 12_000 and w.rate == 24_000.0
    assert abs(w.cpu_us_per_event - 50.0) < 1e-6  # 0.6 CPU seconds over 12,000 records


def test_an_empty_window_has_no_figures() -> None:
    import math

    w = stages.Window()
    w.add(1.0, 0, 1.0)
    assert math.isnan(w.rate) and math.isnan(w.cpu_us_per_event)


def test_cpu_seconds_of_this_process() -> None:
    import os

    from pipeline.bench.procs import proc_cpu_seconds

    before = proc_cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    after = proc_cpu_seconds(os.getpid())
    assert before is not None and after >= before
    assert proc_cpu_seconds(2**22 + 12345) is None  # no such process


def test_missing_figures_are_not_applicable() -> None:
    t = rows(command.table(report(e2e_p99_ms=None, worker_rss_mb_100k_nodes=None)))
    assert t["end to end p99 at 1,000/s"][0] == "n/a" and t["end to end p99 at 1,000/s"][4] == "n/a"
    assert t["worker RSS at 100,000 nodes"][0] == "n/a"


def test_percentile() -> None:
    values = list(range(1, 101))
    assert stages.percentile(values, 50) in (50, 51)
    assert stages.percentile(values, 99) == 99
    assert stages.percentile([7.0], 99) == 7.0


def test_a_report_path_that_cannot_be_written_is_a_one_line_error_before_measuring(tmp_path) -> None:
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--report", str(blocker / "r.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert "--report" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cores_bridge_and_worker_need_at_5k_from_their_cpu_per_record() -> None:
    """90 + 60 µs per record: 0.15 cores per 1,000/s, 0.75 cores at 5,000/s."""
    r = report(cpus=2, e2e_machine_busy_5k=0.97, e2e_bridge_cores_5k=1.1, e2e_worker_cores_5k=0.6,
               worker_cpu_us_per_event=60.0)
    t = rows(command.table(r))
    assert t["CPU bridge + worker need at 5,000/s"][:2] == ["0.75 cores", "2 cores (machine)"]
    busy = [cells for name, cells in t.items() if name == "machine busy while publishing"]
    assert busy[-1][:2] == ["97%", "2 cores (cores used: bridge 1.10, worker 0.60)"]
    lines = command.summary(report(cpus=2, bridge_cpu_us_per_event=250.0, worker_cpu_us_per_event=176.0))
    assert ("CPU per 1,000 events/s under a backlog: bridge 0.25 cores, worker 0.18; at 5,000/s the two need "
            "2.13 cores, of this machine's 2, before the publisher and the brokers (the 5,000/s stage is bound by "
            "the machine: no target)") in lines.splitlines()
    assert rows(command.table(report(worker_cpu_us_per_event=None)))["CPU bridge + worker need at 5,000/s"][0] == "n/a"


def test_cpu_share_of_a_busy_process_and_of_the_machine() -> None:
    import os
    import time

    from pipeline.bench.procs import CpuShare, machine_cpu_seconds

    busy, total = machine_cpu_seconds()
    assert 0 < busy <= total
    # 0.3 s of this process's CPU, however long a loaded machine takes to give it: the figures are
    # checked against that CPU over the wall time it took, not against the machine's speed
    wall = time.monotonic()
    share = CpuShare({"me": os.getpid(), "gone": 2**22 + 12345})
    spun = time.process_time() + 0.3
    while time.process_time() < spun:
        pass
    figures = share.figures()
    at_least = (0.3 - 0.02) / (time.monotonic() - wall)  # 0.02: the clock ticks of /proc/<pid>/stat
    assert at_least <= figures["me_cores"] <= 1.05 and figures["gone_cores"] is None
    assert figures["me_cores"] / (os.cpu_count() or 1) * 0.9 < figures["machine_busy"] <= 1.0


def test_the_soak_s_verdict_is_rss_growth_after_the_warm_up_and_operations_lost() -> None:
    from pipeline.bench.soak import verdict

    samples = [{"at_s": 60.0 * (i + 1), "bridge_rss_mb": 40.0 + (5.0 if i == 0 else 0.0),
                "worker_rss_mb": 200.0 + i, "operations": 100, "matched": 100 - (i == 3)} for i in range(20)]
    v = verdict(samples, 600.0)  # from the sample at 600 s (worker 209 MB) to the last (219 MB)
    assert v["worker_rss_growth"] == round(219 / 209 - 1, 4) and v["bridge_rss_growth"] == 0.0
    assert v["unmatched"] == 1 and v["operations"] == 2000


def _soak_sample(at_s: float, cycle: int, bridge: float, worker: float, operations: int = 100, matched: int = 100) -> dict:
    return {"at_s": at_s, "cycle": cycle, "bridge_rss_mb": bridge, "worker_rss_mb": worker,
            "operations": operations, "matched": matched}


def test_the_soak_compares_a_restarted_worker_at_the_end_of_each_cycle() -> None:
    samples = [_soak_sample(300, 0, 46, 130), _soak_sample(590, 0, 50, 167),
               _soak_sample(660, 1, 54, 122), _soak_sample(1220, 1, 55, 193),  # just restarted, then its end
               _soak_sample(1300, 2, 57, 125), _soak_sample(1900, 2, 59.4, 208, operations=100, matched=98)]
    from pipeline.bench.soak import verdict

    out = verdict(samples, warmup_s=600)
    assert out["worker_rss_growth"] == round(208 / 193 - 1, 4)  # not 208 / 122
    assert out["bridge_rss_growth"] == round(59.4 / 54 - 1, 4)
    assert out["worker_rss_mb_cycle_ends"] == [167, 193, 208]
    assert out["unmatched"] == 2 and out["operations"] == 600


def test_the_soak_tells_late_and_alerted_ends_from_lost_ones() -> None:
    from pipeline.bench.soak import _Published

    published = _Published(records=4, op_ids={"o1", "o2", "o3"}, ends={"e1", "e2", "e3", "e-late"},
                           alerted={"e-orphan", "s-missing"})
    out = published.account({"e-late", "e-orphan", "e-gone"})
    assert out["doubled"] == 1 and out["unmatched"] == 3
    assert (out["late"], out["alerted"], out["lost"]) == (1, 1, 1) and out["lost_ids"] == ["e-gone"]


def test_the_soak_shows_a_worker_growing_from_cycle_to_cycle() -> None:
    samples = [_soak_sample(700, 1, 50, 200), _soak_sample(1200, 1, 50, 200), _soak_sample(1800, 2, 50, 260)]
    from pipeline.bench.soak import verdict

    assert verdict(samples, warmup_s=600)["worker_rss_growth"] == 0.3
