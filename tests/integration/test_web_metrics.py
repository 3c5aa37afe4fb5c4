"""/metrics of a real worker fed real traffic parses with prometheus_client's own text parser and
holds faust's sensor metrics and ours with the figures the traffic implies."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.web_traffic import WorkerProcess, feed_mixed_fleet

pytestmark = pytest.mark.integration

WORKER_FLAGS = ("--lateness", "0", "--deadline", "baremetal.node.provision_set=300", "--orphan-grace", "60")


def test_metrics_parse_and_count_the_traffic(tmp_path: Path, unique: str) -> None:
    prefix = f"webmet{unique}."
    worker = WorkerProcess(tmp_path, f"webmet-{unique}", prefix, free_port(), *WORKER_FLAGS).start()
    try:
        worker.wait_ready()
        fleet, counts = feed_mixed_fleet(worker, prefix)
        # Gauges of table contents come from a table scan that serves WEB_SCAN_CACHE_S (2 s): read
        # /metrics until a scan taken after the last event answers, then assert on that answer.
        open_deploys = ("pipeline_open_operations", (("operation", "baremetal.node.provision_set"),))
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = response.read().decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
            if samples.get(open_deploys) == 20 or time.monotonic() > deadline:
                break
            time.sleep(0.5)

        for event_type, n in counts.items():
            assert samples[("pipeline_events_total", (("event_type", event_type),))] == n
        power = "baremetal.node.power_set"
        assert samples[("pipeline_operations_total", (("operation", power), ("outcome", "success")))] == 190
        assert samples[("pipeline_operations_total", (("operation", power), ("outcome", "error")))] == 10
        assert samples[("pipeline_alerts_total", (("type", "missing_end"),))] == 20
        assert samples[("pipeline_alerts_total", (("type", "orphan_end"),))] == 8
        assert samples[("pipeline_open_operations", (("operation", "baremetal.node.provision_set"),))] == 20
        lag = {labels: v for (name, labels), v in samples.items() if name == "pipeline_consumer_lag"}
        node_topic = f"{prefix}baremetal.node"
        assert {dict(labels)["partition"] for labels in lag if dict(labels)["topic"] == node_topic} == {str(p) for p in range(6)}
        assert all(v == 0 for v in lag.values()), lag
        # faust's own metrics (faust.sensors.prometheus), under the faust_ prefix; its per-event
        # sensors are off (streams/faust_patches.LeanMonitor, ~40 us per event): the pipeline's own
        # counters above count the events
        assert {"faust_messages_received", "faust_total_events", "faust_events_runtime_ms", "faust_topic_messages_sent",
                "faust_table_operations"} <= set(families)
        assert samples[("faust_messages_received_total", ())] == 0
    finally:
        worker.stop()
