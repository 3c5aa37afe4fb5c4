"""The metrics of a real bridge and worker after the simulator's traffic through the real stack
(oslo.messaging's rabbit driver -> RabbitMQ -> bridge -> Kafka -> worker):

* the duration histogram counts, per operation, exactly the records on `pipeline.operations` that
  have a duration, and `pipeline_operations_total` all of them;
* the node gauges sum to the number of nodes `/api/nodes` reports;
* every metric name the PrometheusRule and the Grafana dashboards read is one that the live worker
  or bridge exports (or a recording rule of ours);
* promtool's linter accepts the families both processes define.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tests.support.worker as worker_support
from pipeline.bench.procs import Names, end_run, start_bridge, start_worker
from pipeline.streams.topics import Topics
from tests.support.monitoring import all_expressions, exported_names, metric_names, promtool, recorded_names
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NODES = 300


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict, name: str, topics: set[str] | None = None) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and (topics is None or dict(labels).get("topic") in topics))


def _ours(text: str) -> bytes:
    """Only the families the project defines (faust's and the client library's own are not ours)."""
    lines = [line for line in text.splitlines(keepends=True)
             if line.split(" ", 3)[2 if line.startswith("#") else 0].startswith(("pipeline_", "bridge_"))]
    return "".join(lines).encode()


async def _ready(url: str, proc) -> None:
    deadline = time.monotonic() + 90
    while _fetch(url + "/readyz")[0] != 200:
        assert proc.alive() and time.monotonic() < deadline, proc.tail()
        await asyncio.sleep(0.5)


def _simulate(names: Names, rate: int) -> asyncio.Future:
    return asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "simulate", "--output", "rabbit", "--amqp-url", AMQP_URL,
        "--nodes", str(NODES), "--images", "30", "--events", "4000", "--rate", str(rate), "--seed", "17",
        "--loss", "0.02", "--ironic-topic", names.ironic_topic, "--glance-topic", names.glance_topic, "--quiet",
        stderr=asyncio.subprocess.PIPE)


async def _settle(names: Names, bridge_url: str, worker_urls: list[str], procs: list) -> None:
    """Until the bridge relayed what it got, the workers read all of it and no lag is left, for 3 s
    running (the bridge also relays families no agent reads, e.g. image.member: left out)."""
    sources = set(Topics.named(names.topic_prefix, names.output_prefix).sources)
    deadline = time.monotonic() + 180
    settled_since, last = None, None
    while True:
        assert all(p.alive() for p in procs), " / ".join(p.tail() for p in procs)
        assert time.monotonic() < deadline, f"not settled: bridge/workers/lag/in flight {last}"
        ws = [_samples(_fetch(url + "/metrics")[1].decode()) for url in worker_urls]
        b = _samples(_fetch(bridge_url)[1].decode())
        now = (_total(b, "bridge_relayed_total", sources), sum(_total(w, "pipeline_relay_records_total") for w in ws),
               sum(_total(w, "pipeline_consumer_lag") for w in ws), _total(b, "bridge_in_flight_deliveries"))
        # a rebalance re-reads what the old owner had not committed: read >= relayed, then stable
        if now[0] > 0 and now[1] >= now[0] and now[2] == 0 and now[3] == 0 and now == last:
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since >= 3:
                return
        else:
            settled_since = None
        last = now
        await asyncio.sleep(1)


def _counts(samples: list[dict], name: str, *keys: str) -> collections.Counter:
    """A family's samples summed over workers (as PromQL's sum by (keys) does)."""
    out: collections.Counter = collections.Counter()
    for got in samples:
        for (n, labels), value in got.items():
            if n == name:
                out[tuple(dict(labels)[k] for k in keys)] += value
    return out


async def _operations(names: Names) -> list[dict]:
    return [value for _, value, _ in await asyncio.to_thread(worker_support.read, f"{names.output_prefix}operations")]


def _check_sums(records: list[dict], samples: list[dict], nodes_matched: int) -> None:
    """Acceptance 1, summed over the workers: histogram counts per operation = the records with a
    duration; pipeline_operations_total = all records; node gauges = the nodes of /api/nodes."""
    timed = collections.Counter((r["operation"],) for r in records if r["duration_ms"] is not None)
    assert len(records) > 500 and len(timed) >= 3, (len(records), timed)
    assert _counts(samples, "pipeline_operation_duration_seconds_count", "operation") == timed
    assert _counts(samples, "pipeline_operations_total", "operation", "outcome") == \
        collections.Counter((r["operation"], r["outcome"]) for r in records)
    assert nodes_matched >= NODES  # the simulator also enrolls nodes as it goes
    assert sum(_counts(samples, "pipeline_nodes", "power_state").values()) == nodes_matched
    assert sum(_counts(samples, "pipeline_nodes", "provision_state").values()) == nodes_matched


def _matched(worker_url: str) -> int:
    status, body = _fetch(worker_url + "/api/nodes?limit=1")
    assert status == 200, body
    answer = json.loads(body)
    assert not answer.get("partial"), answer
    return answer["matched"]


def _reconciler_names() -> set[str]:
    """The reconciler's metric families as its module declares them (it runs against a real Ironic in
    tests/integration/test_reconcile_ironic.py, not here): their names as /metrics gives them."""
    from prometheus_client import CollectorRegistry, generate_latest

    from pipeline.reconcile import metrics

    registry = CollectorRegistry()
    for metric in (metrics.REQUESTS, metrics.LATENCY, metrics.OBSERVATIONS, metrics.PENDING, metrics.DRIFT,
                   metrics.SWEEPS, metrics.BUILD_INFO):
        registry.register(metric)
    return exported_names(generate_latest(registry).decode())


async def test_live_metrics_after_simulated_traffic(tmp_path) -> None:
    names = Names()
    web, scrape = free_port(), free_port()
    bridge = start_bridge(names, amqp_url=AMQP_URL, bootstrap=KAFKA, extra=["--metrics-port", str(scrape)])
    worker = start_worker(names, bootstrap=KAFKA, data_dir=str(tmp_path / "worker"), web_port=web)
    worker_url, bridge_url = f"http://127.0.0.1:{web}", f"http://127.0.0.1:{scrape}/metrics"
    try:
        await bridge.wait_for("relaying from", 60)
        await _ready(worker_url, worker)
        simulate = await _simulate(names, 0)
        _, err = await asyncio.wait_for(simulate.communicate(), 180)
        assert simulate.returncode == 0, err.decode()[-2000:]
        await _settle(names, bridge_url, [worker_url], [bridge, worker])

        records = await _operations(names)
        worker_text = _fetch(worker_url + "/metrics")[1].decode()
        bridge_text = _fetch(bridge_url)[1].decode()
        got = _samples(worker_text)
        matched = _matched(worker_url)
        _check_sums(records, [got], matched)
        for (name, labels), value in got.items():  # the +Inf bucket is the count
            if name == "pipeline_operation_duration_seconds_bucket" and dict(labels)["le"] == "+Inf":
                rest = tuple(kv for kv in labels if kv[0] != "le")
                assert value == got[("pipeline_operation_duration_seconds_count", rest)]
        assert not any("uuid" in k for (_, labels) in got for k, _ in labels)
        assert _total(got, "pipeline_operations_past_deadline") > 0  # --loss 0.02 dropped some ends
        newest = {dict(labels)["topic"]: v for (name, labels), v in got.items()
                  if name == "pipeline_relay_newest_event_timestamp_seconds"}
        assert f"{names.topic_prefix}baremetal.node" in newest and all(v > 1e9 for v in newest.values())

        # (3) every metric the rules and dashboards read is exported by the live processes
        exported = exported_names(worker_text) | exported_names(bridge_text) | recorded_names() | _reconciler_names()
        used = {name for expr in all_expressions() for name in metric_names(expr)}
        assert used and not used - exported, f"read by rules or dashboards but not exported: {sorted(used - exported)}"
        histogram = _counts([got], "pipeline_operation_duration_seconds_count", "operation")
        print(f"\nlive metrics, one worker: {len(records)} operation records, histogram counts "
              f"{ {op: int(n) for (op,), n in sorted(histogram.items())} }; {matched} nodes in /api/nodes = "
              f"sum(pipeline_nodes) {_total(got, 'pipeline_nodes'):g}; {len(used)} metric names read by rules and "
              f"dashboards, all exported")

        # the naming rules on the live pages
        for text in (worker_text, bridge_text):
            done = subprocess.run([promtool(), "check", "metrics"], input=_ours(text), capture_output=True, timeout=30)
            assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (done.stdout + done.stderr).decode()
    finally:
        await end_run(names, AMQP_URL, KAFKA, bridge, worker)


async def test_two_workers_sum_to_the_fleet_across_a_rebalance(tmp_path) -> None:
    """A second worker joins while traffic flows: each worker exports only the partitions it owns,
    and the sums over both are the fleet, with nothing counted twice."""
    names = Names()
    webs, scrape = [free_port(), free_port()], free_port()
    urls, bridge_url = [f"http://127.0.0.1:{w}" for w in webs], f"http://127.0.0.1:{scrape}/metrics"
    bridge = start_bridge(names, amqp_url=AMQP_URL, bootstrap=KAFKA, extra=["--metrics-port", str(scrape)])
    workers = [start_worker(names, bootstrap=KAFKA, data_dir=str(tmp_path / "a"), web_port=webs[0])]
    try:
        await bridge.wait_for("relaying from", 60)
        await _ready(urls[0], workers[0])
        simulate = await _simulate(names, 300)
        await asyncio.sleep(5)  # part of the traffic is processed by the first worker alone
        workers.append(start_worker(names, bootstrap=KAFKA, data_dir=str(tmp_path / "b"), web_port=webs[1]))
        _, err = await asyncio.wait_for(simulate.communicate(), 240)
        assert simulate.returncode == 0, err.decode()[-2000:]
        for url, proc in zip(urls, workers):
            await _ready(url, proc)
        await _settle(names, bridge_url, urls, [bridge, *workers])

        records = await _operations(names)
        samples = [_samples(_fetch(url + "/metrics")[1].decode()) for url in urls]
        matched = _matched(urls[1])
        _check_sums(records, samples, matched)
        owned = [sum(_counts([s], "pipeline_nodes", "power_state").values()) for s in samples]
        assert all(n > 0 for n in owned), f"each worker exports the nodes of its own partitions: {owned}"
        relay_read = [_total(s, "pipeline_relay_records_total") for s in samples]
        assert all(n > 0 for n in relay_read), relay_read
        print(f"\nlive metrics, two workers: {len(records)} operation records = histogram counts summed over "
              f"workers; nodes per worker {owned} sum to {matched} in /api/nodes; relay records read per worker "
              f"{relay_read}")
    finally:
        await end_run(names, AMQP_URL, KAFKA, bridge, *workers)
