"""The bridge's Prometheus metrics, served as text on http://<addr>:<port>/metrics (port 0: off).

Metric objects are module globals so that several bridges run in one process (the benchmark) share
them instead of failing on a second registration; counts then add up across runs.
"""
from __future__ import annotations

import logging
from typing import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
PRODUCE_LATENCY = Histogram(
    "bridge_produce_latency_seconds",
    "from handing a record to the producer to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def track_in_flight(read: Callable[[], float]) -> None:
    """The in-flight gauge reads the relay's counter at scrape time: nothing to do per message."""
    IN_FLIGHT.set_function(read)


def serve(port: int, addr: str = "127.0.0.1"):
    """Start the /metrics endpoint on a daemon thread; returns the server (None when port is 0)."""
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=addr)
    log.info("metrics on http://%s:%d/metrics", addr, server.server_address[1])
    return server
