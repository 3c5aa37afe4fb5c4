"""The reconciler's Prometheus metrics, apart so that the service and the drift sweep both count
into them without importing each other."""
from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram

from .. import __version__

REQUESTS = Counter("pipeline_reconcile_requests", "questions asked of the services' APIs, by outcome: found, "
                   "not_found, or why it failed (unreachable, timeout, denied, throttled, server, unexpected)",
                   ["service", "outcome"])
LATENCY = Histogram("pipeline_reconcile_request_seconds", "how long the API took to answer (or fail)", ["service"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
OBSERVATIONS = Counter("pipeline_reconcile_observations", "observations written and acknowledged by Kafka, "
                       "by what they answer: alert, sweep, list", ["about"])
PENDING = Gauge("pipeline_reconcile_pending_jobs", "alerts and resources waiting for an answer or asked again later")
DRIFT = Gauge("pipeline_state_drift_nodes", "nodes whose power or provision state or maintenance differed between "
              "Ironic and the node-state table in the last sweep")
SWEEPS = Counter("pipeline_reconcile_sweeps", "drift sweeps, by how they ended: done or failed", ["outcome"])
BUILD_INFO = Gauge("pipeline_reconcile_build_info", "Always 1: the version of this process", ["version", "python"])
BUILD_INFO.labels(__version__, platform.python_version()).set(1)
