"""The worker's Prometheus families from plain figures: the duration histogram fed by the agents'
operation hook, node and open-operation gauges from the table index, the event clocks, and the
naming rules checked by promtool's own linter."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.catalog import OPERATIONS
from pipeline.web.metrics import PipelineCollector, WorkerFigures, newest_event_seconds, pipeline_metrics
from pipeline.web.observe import DURATION_BUCKETS_S, Observations

POWER = "baremetal.node.power_set"
DEPLOY = "baremetal.node.provision_set"


def _operation(operation: str, outcome: str, duration_ms: int | None, uuid: str = "n1") -> dict:
    return {"op_id": f"{uuid}-{operation}-{duration_ms}", "resource_uuid": uuid, "operation": operation,
            "outcome": outcome, "duration_ms": duration_ms, "ended_at": None if duration_ms is None else 1_700_000_000}


def _samples(figures: WorkerFigures, observations: Observations) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(observations, lambda: figures))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_buckets_run_from_a_second_to_four_hours_through_every_catalog_deadline() -> None:
    assert DURATION_BUCKETS_S[0] == 1 and DURATION_BUCKETS_S[-1] == 4 * 3600
    assert list(DURATION_BUCKETS_S) == sorted(set(DURATION_BUCKETS_S))
    for operation, deadline in OPERATIONS.items():
        if deadline <= 4 * 3600:
            assert deadline in DURATION_BUCKETS_S, operation


def test_the_histogram_counts_every_operation_record_with_a_duration_once() -> None:
    obs = Observations(partitions=6)
    for ms in (800, 1000, 12_000, 300_000, 300_001):
        obs.operation(_operation(POWER, "success", ms))
    obs.operation(_operation(POWER, "error", 45_000))
    obs.operation(_operation(DEPLOY, "success", 20 * 60_000))
    obs.operation(_operation(DEPLOY, "superseded", None))  # no end: counted, no duration
    got = _samples(WorkerFigures(), obs)
    power_ok = (("operation", POWER), ("outcome", "success"))
    def bucket(le: str) -> float:
        return got[("pipeline_operation_duration_seconds_bucket", tuple(sorted((*power_ok, ("le", le)))))]

    assert (bucket("1.0"), bucket("10.0"), bucket("30.0"), bucket("300.0"), bucket("600.0"), bucket("+Inf")) == (2, 2, 3, 4, 5, 5)
    assert got[("pipeline_operation_duration_seconds_count", power_ok)] == 5
    assert got[("pipeline_operation_duration_seconds_sum", power_ok)] == pytest.approx(0.8 + 1 + 12 + 300 + 300.001)
    assert got[("pipeline_operation_duration_seconds_count", (("operation", POWER), ("outcome", "error")))] == 1
    assert got[("pipeline_operation_duration_seconds_count", (("operation", DEPLOY), ("outcome", "success")))] == 1
    assert ("pipeline_operation_duration_seconds_count", (("operation", DEPLOY), ("outcome", "superseded"))) not in got
    assert got[("pipeline_operations_total", (("operation", DEPLOY), ("outcome", "superseded")))] == 1
    # history reloaded after a rebalance feeds the stats sketch, never the counters or the histogram
    obs.start_loading(3)
    obs.loaded(3, [_operation(POWER, "success", 5000, "n9")], [])
    assert _samples(WorkerFigures(), obs)[("pipeline_operation_duration_seconds_count", power_ok)] == 5


def test_node_and_open_operation_gauges_sum_to_the_fleet_without_a_label_per_uuid() -> None:
    nodes = [
        {"uuid": "a", "power_state": "power on", "provision_state": "active", "maintenance": False, "stuck": False},
        {"uuid": "b", "power_state": "power on", "provision_state": "active", "maintenance": False, "stuck": False},
        {"uuid": "c", "power_state": None, "provision_state": "deploying", "maintenance": True, "stuck": True},
        {"uuid": "d", "power_state": "power off", "provision_state": "cleaning", "maintenance": False, "stuck": False},
    ]
    ops = [{"operation": DEPLOY, "missing_end_raised_at": None}, {"operation": DEPLOY, "missing_end_raised_at": "t"},
           {"operation": POWER, "missing_end_raised_at": None}]
    got = _samples(WorkerFigures(nodes=nodes, open_operations=ops), Observations())
    node_samples = {labels: v for (name, labels), v in got.items() if name == "pipeline_nodes"}
    assert sum(node_samples.values()) == 4
    assert node_samples[(("maintenance", "false"), ("power_state", "power on"), ("provision_state", "active"))] == 2
    assert node_samples[(("maintenance", "true"), ("power_state", "none"), ("provision_state", "deploying"))] == 1
    assert got[("pipeline_nodes_stuck", (("provision_state", "deploying"),))] == 1
    assert ("pipeline_nodes_stuck", (("provision_state", "cleaning"),)) not in got
    assert got[("pipeline_open_operations", (("operation", DEPLOY),))] == 2
    assert got[("pipeline_operations_past_deadline", (("operation", DEPLOY),))] == 1
    assert got[("pipeline_operations_past_deadline", (("operation", POWER),))] == 0
    assert not any("uuid" in dict(labels) for _, labels in got)


def test_alert_counters_exist_from_zero_and_build_info_names_the_version() -> None:
    obs = Observations()
    obs.alert({"kind": "missing_end", "resource_uuid": "n1", "alert_id": "x"})
    got = _samples(WorkerFigures(), obs)
    assert got[("pipeline_alerts_total", (("type", "missing_end"),))] == 1
    for kind in ("orphan_end", "resolved_late", "stuck_state"):
        assert got[("pipeline_alerts_total", (("type", kind),))] == 0
    (build,) = [labels for name, labels in got if name == "pipeline_build_info"]
    assert dict(build)["component"] == "worker" and dict(build)["version"]


def test_newest_event_per_topic_counts_only_the_lanes_this_worker_owns() -> None:
    newest = {("t.node", 0): 10_000_000, ("t.node", 1): 30_000_000, ("t.node", 2): 99_000_000, ("t.image", 0): 5_000_000}
    active = {("t.node", 0), ("t.node", 1), ("t.image", 0)}
    assert newest_event_seconds(newest, active) == {"t.node": 30.0, "t.image": 5.0}
    got = _samples(WorkerFigures(newest_event={"t.node": 30.0}), Observations())
    assert got[("pipeline_relay_newest_event_timestamp_seconds", (("topic", "t.node"),))] == 30.0


def test_loss_counts_per_publisher_are_gauges_of_the_owned_partitions() -> None:
    loss = {"conductor-1": {"started": 10, "ended": 9, "missing": 1}, "glance-api-0": {"started": 2, "ended": 2}}
    got = _samples(WorkerFigures(loss=loss), Observations())
    assert got[("pipeline_publisher_operations", (("publisher", "conductor-1"), ("what", "missing")))] == 1
    assert got[("pipeline_publisher_operations", (("publisher", "glance-api-0"), ("what", "started")))] == 2


def test_promtool_finds_nothing_against_the_naming_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run `make tools` (tests/monitoring/tools.sh installs Debian's prometheus)")
    obs = Observations()
    obs.operation(_operation(POWER, "success", 1000))
    obs.alert({"kind": "missing_end", "resource_uuid": "n1", "alert_id": "x"})
    obs.event("baremetal.node.power_set.start")
    figures = WorkerFigures(
        nodes=[{"power_state": "power on", "provision_state": "active", "maintenance": False, "stuck": False}],
        open_operations=[{"operation": POWER, "missing_end_raised_at": None}],
        consumer_lag={("t.node", 0): 3}, newest_event={"t.node": 1.0},
        counters=[("pipeline_relay_records", "Relay records read", 7)],
        loss={"ironic-conductor.host1": {"started": 3, "missing": 1}},
    )
    registry = CollectorRegistry()
    registry.register(PipelineCollector(obs, lambda: figures))
    text = generate_latest(registry)
    assert len(pipeline_metrics(obs, figures)) >= 12
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (done.stdout + done.stderr).decode()
