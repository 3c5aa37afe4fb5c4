"""The bridge's metrics against the same naming rules as the worker's (promtool's linter), and its
gauges reading the relay at scrape time."""

from __future__ import annotations

import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.bridge import metrics
from pipeline.bridge.relay import REASON_CLASSES, reason_class


def _ours() -> bytes:
    """The default registry's text, only the families the bridge defines (not process_/python_)."""
    text = generate_latest(REGISTRY).decode()
    keep = [line for line in text.splitlines(keepends=True)
            if line.split(" ", 3)[2 if line.startswith("#") else 0].startswith(("bridge_", "pipeline_"))]
    return "".join(keep).encode()


def test_gauges_read_the_relay_and_dead_letter_series_start_at_zero() -> None:
    relay = SimpleNamespace(in_flight=7, last_ack=time.perf_counter() - 30.0)
    metrics.track(relay, REASON_CLASSES)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(_ours().decode()) for s in f.samples}
    assert samples[("bridge_in_flight_deliveries", ())] == 7
    assert samples[("bridge_last_ack_timestamp_seconds", ())] == pytest.approx(time.time() - 30.0, abs=2)
    assert reason_class("something odd") in REASON_CLASSES
    for reason in REASON_CLASSES:
        assert ("bridge_deadlettered_total", (("reason", reason),)) in samples
    build = [dict(labels) for name, labels in samples if name == "pipeline_build_info"]
    assert [b["component"] for b in build] == ["bridge"]


def test_promtool_finds_nothing_against_the_naming_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run `make tools` (tests/monitoring/tools.sh installs Debian's prometheus)")
    metrics.RELAYED.labels("notifications.baremetal.node").inc(0)
    text = _ours()
    assert b"bridge_relayed_total" in text and b"bridge_produce_latency_seconds_bucket" in text
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (done.stdout + done.stderr).decode()
