"""The benchmark's table: each figure next to its limit, the ratio, the target and whether it is met."""
from __future__ import annotations

from pipeline.bench import command, stages


def report(**overrides) -> dict:
    base = {
        "bridge_rate": 8000.0, "amqp_drain_rate": 10000.0, "kafka_produce_rate": 20000.0,
        "worker_rate": 12000.0, "kafka_consume_rate": 30000.0, "e2e_p50_ms": 40.0, "e2e_p99_ms": 120.0,
        "e2e_offered_rate": 1000.0, "bridge_peak_rss_mb": 60.0, "worker_peak_rss_mb": 300.0,
        "worker_rss_mb_100k_nodes": 700.0, "rss_nodes": 100000, "core_rate": 20000.0, "oslo_publish_rate": 1200.0,
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
    bridge = t["bridge relay RabbitMQ->Kafka"]
    assert bridge[0] == "8,000/s" and bridge[1] == "10,000/s (aio-pika drain)" and bridge[2] == "0.80"
    assert bridge[4] == "yes"
    worker = t["worker, every agent on"]
    assert worker[2] == "0.40" and worker[4] == "yes"
    assert t["end to end p99 at 1,000/s"][4] == "yes"
    assert t["worker RSS at 100,000 nodes"][4] == "yes"


def test_misses_are_reported_against_the_lower_limit() -> None:
    t = rows(command.table(report(bridge_rate=4000.0, kafka_produce_rate=6000.0, amqp_drain_rate=9000.0,
                                  worker_rate=9000.0, e2e_p99_ms=400.0, worker_rss_mb_100k_nodes=1500.0)))
    assert t["bridge relay RabbitMQ->Kafka"][1] == "6,000/s (aiokafka produce)"
    assert t["bridge relay RabbitMQ->Kafka"][4] == "NO"
    assert t["worker, every agent on"][4] == "NO"  # 0.30 of the consumer but under 10,000/s
    assert t["end to end p99 at 1,000/s"][4] == "NO"
    assert t["worker RSS at 100,000 nodes"][4] == "NO"


def test_missing_figures_are_not_applicable() -> None:
    t = rows(command.table(report(e2e_p99_ms=None, worker_rss_mb_100k_nodes=None)))
    assert t["end to end p99 at 1,000/s"][0] == "n/a" and t["end to end p99 at 1,000/s"][4] == "n/a"


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
