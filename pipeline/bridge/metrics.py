"""The bridge's Prometheus metrics, served as text on http://<addr>:<port>/metrics (port 0: off).

Metric objects are module globals so that several bridges run in one process (the benchmark) share
them instead of failing on a second registration; counts then add up across runs.

Names follow Prometheus' rules, as the worker's do (docs/monitoring.md): base units in the name,
counters end in `_total` (prometheus_client appends it), `pipeline_build_info` names the version.
The gauges read the relay's own fields at scrape time: nothing is done per message for them.
"""
from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from pipeline import __version__

log = logging.getLogger("pipeline.bridge")

RELAYED = Counter("bridge_relayed", "records relayed to Kafka and acknowledged", ["topic"])
DEADLETTERED = Counter("bridge_deadlettered", "deliveries written to the dead-letter topic", ["reason"])
FILTERED = Counter("bridge_filtered", "deliveries acked without relaying (below --min-priority)", ["priority"])
PRODUCE_RETRIES = Counter("bridge_produce_retries", "records produced again after a failed attempt")
RECONNECTS = Counter("bridge_reconnects", "reconnections after losing a broker", ["broker"])
PRODUCER_RENEWALS = Counter("bridge_producer_renewals",
                            "producers replaced after Kafka lost their sequence state")
TOPICS_CREATED = Counter("bridge_topics_created", "topics the bridge created")
HEARTBEATS = Counter("bridge_heartbeats", "heartbeat records written, caught_up=false: the held clock repeated",
                     ["caught_up"])
HEARTBEAT_VOUCHED = Gauge("bridge_heartbeat_vouched_timestamp_seconds",
                          "the time the latest caught-up heartbeats vouched for (Unix seconds)")
IN_FLIGHT = Gauge("bridge_in_flight_deliveries", "deliveries received and not yet settled")
LAST_ACK = Gauge("bridge_last_ack_timestamp_seconds",
                 "Unix time Kafka last acknowledged a record of this bridge (its start before the first)")
BUILD_INFO = Gauge("pipeline_build_info", "Always 1: the version of this process", ["component", "version", "python"])
BUILD_INFO.labels("bridge", __version__, platform.python_version()).set(1)
PRODUCE_LATENCY = Histogram(
    "bridge_produce_latency_seconds",
    "from handing a record to the producer to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def track(relay: Any, reason_classes: Iterable[str] = ()) -> None:
    """Point the gauges at `relay` (its `in_flight` count and `last_ack`, a perf_counter time), and
    create the dead-letter series at 0, so that Prometheus' increase() sees the first dead letter."""
    IN_FLIGHT.set_function(lambda: relay.in_flight)
    LAST_ACK.set_function(lambda: time.time() - (time.perf_counter() - relay.last_ack))
    for reason in reason_classes:
        DEADLETTERED.labels(reason)


def serve(port: int, addr: str = "127.0.0.1"):
    """Start the /metrics endpoint on a daemon thread; returns the server (None when port is 0)."""
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=addr)
    log.info("metrics on http://%s:%d/metrics", addr, server.server_address[1])
    return server
