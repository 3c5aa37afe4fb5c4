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

from monitoring_objects import ROOT, all_expressions, exported_names, metric_names, promtool, recorded_names
from pipeline.bench.procs import Names, delete_queues, delete_topics, start_bridge, start_worker
from pipeline.streams.topics import Topics
from tests.support.ports import free_port

sys.path.insert(0, str(ROOT / "tests" / "integration"))
import worker_support  # noqa: E402

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


async def test_live_metrics_after_simulated_traffic(tmp_path) -> None:
    names = Names()
    web, scrape = free_port(), free_port()
    bridge = start_bridge(names, amqp_url=AMQP_URL, bootstrap=KAFKA, extra=["--metrics-port", str(scrape)])
    worker = start_worker(names, bootstrap=KAFKA, data_dir=str(tmp_path / "worker"), web_port=web)
    worker_url, bridge_url = f"http://127.0.0.1:{web}", f"http://127.0.0.1:{scrape}/metrics"
    try:
        await bridge.wait_for("relaying from", 60)
        deadline = time.monotonic() + 90
        while _fetch(worker_url + "/readyz")[0] != 200:
            assert worker.alive() and time.monotonic() < deadline, worker.tail()
            await asyncio.sleep(0.5)
        simulate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "simulate", "--output", "rabbit", "--amqp-url", AMQP_URL,
            "--nodes", str(NODES), "--images", "30", "--events", "4000", "--rate", "0", "--seed", "17",
            "--loss", "0.02", "--ironic-topic", names.ironic_topic, "--glance-topic", names.glance_topic, "--quiet",
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(simulate.communicate(), 180)
        assert simulate.returncode == 0, err.decode()[-2000:]

        # settled: the bridge relayed what it got, the worker read all of it, no lag, for 3 s running
        # (the bridge also relays families no agent reads, e.g. image.member: those are left out)
        sources = set(Topics.named(names.topic_prefix, names.output_prefix).sources)
        deadline = time.monotonic() + 180
        settled_since, last = None, None
        while True:
            assert worker.alive() and bridge.alive(), worker.tail() + bridge.tail()
            assert time.monotonic() < deadline, f"not settled: bridge/worker/lag {last}"
            w, b = _samples(_fetch(worker_url + "/metrics")[1].decode()), _samples(_fetch(bridge_url)[1].decode())
            now = (_total(b, "bridge_relayed_total", sources), _total(w, "pipeline_relay_records_total"),
                   _total(w, "pipeline_consumer_lag"), _total(b, "bridge_in_flight_deliveries"))
            if now[0] > 0 and now[0] == now[1] and now[2] == 0 and now[3] == 0 and now == last:
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= 3:
                    break
            else:
                settled_since = None
            last = now
            await asyncio.sleep(1)

        records = [value for _, value, _ in await asyncio.to_thread(worker_support.read, f"{names.output_prefix}operations")]
        worker_text = _fetch(worker_url + "/metrics")[1].decode()
        bridge_text = _fetch(bridge_url)[1].decode()
        got = _samples(worker_text)

        # (1) the histogram: per operation, the records with a duration; the counter: all of them
        timed = collections.Counter(r["operation"] for r in records if r["duration_ms"] is not None)
        by_outcome = collections.Counter((r["operation"], r["outcome"]) for r in records)
        histogram = collections.Counter()
        for (name, labels), value in got.items():
            if name == "pipeline_operation_duration_seconds_count":
                histogram[dict(labels)["operation"]] += value
        assert len(records) > 500 and len(timed) >= 3, (len(records), timed)
        assert histogram == timed
        counted = {(dict(l)["operation"], dict(l)["outcome"]): v for (n, l), v in got.items() if n == "pipeline_operations_total"}
        assert counted == by_outcome
        for (name, labels), value in got.items():  # the +Inf bucket is the count
            if name == "pipeline_operation_duration_seconds_bucket" and dict(labels)["le"] == "+Inf":
                rest = tuple(kv for kv in labels if kv[0] != "le")
                assert value == got[("pipeline_operation_duration_seconds_count", rest)]

        # (1) the node gauges against the fleet view (both read the same table scan)
        status, body = _fetch(worker_url + "/api/nodes?limit=1")
        assert status == 200
        matched = json.loads(body)["matched"]
        assert matched >= NODES  # the simulator also enrolls nodes as it goes
        assert _total(got, "pipeline_nodes") == matched
        by_power = collections.Counter()
        for (name, labels), value in got.items():
            if name == "pipeline_nodes":
                by_power[dict(labels)["power_state"]] += value
        assert sum(by_power.values()) == matched and not any("uuid" in k for (_, l) in got for k, _ in l)
        assert _total(got, "pipeline_operations_past_deadline") > 0  # --loss 0.02 dropped some ends
        newest = {dict(l)["topic"]: v for (n, l), v in got.items() if n == "pipeline_relay_newest_event_timestamp_seconds"}
        assert f"{names.topic_prefix}baremetal.node" in newest and all(v > 1e9 for v in newest.values())

        # (3) every metric the rules and dashboards read is exported by the live processes
        exported = exported_names(worker_text) | exported_names(bridge_text) | recorded_names()
        used = {name for expr in all_expressions() for name in metric_names(expr)}
        assert used and not used - exported, f"read by rules or dashboards but not exported: {sorted(used - exported)}"

        print(f"\nlive metrics: {len(records)} operation records, histogram counts {dict(sorted(histogram.items()))}; "
              f"{matched} nodes in /api/nodes = sum(pipeline_nodes) {_total(got, 'pipeline_nodes'):g}; "
              f"{len(used)} metric names read by rules and dashboards, all exported")

        # the naming rules on the live pages
        for text in (worker_text, bridge_text):
            done = subprocess.run([promtool(), "check", "metrics"], input=_ours(text), capture_output=True, timeout=30)
            assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), (done.stdout + done.stderr).decode()
    finally:
        await bridge.stop()
        await worker.stop()
        await delete_queues(AMQP_URL, [names.queue, *names.oslo_default_queues()])
        await delete_topics(KAFKA, [f"bench-{names.run}.", names.app_id])
        bridge.cleanup()
        worker.cleanup()
