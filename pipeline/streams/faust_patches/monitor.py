"""2. A lean monitor."""
from __future__ import annotations

from time import monotonic
from typing import Any


def _lean_monitor_class() -> type:
    from faust.sensors.prometheus import PrometheusMonitor

    class LeanMonitor(PrometheusMonitor):
        """faust's PrometheusMonitor without its per-event work.

        Symptom: PrometheusMonitor's per-message and per-event hooks (counters, gauges with labels,
        latency histograms, table get/set counters) cost about 40 µs per event
        (faust/sensors/prometheus.py:387-462 on top of monitor.py:445-530). Kept: what something
        reads back: `tp_read_offsets` (pipeline.web.metrics.consumer_lag), `stream_inbound_time`
        (faust's "stream stopped processing" livelock log, drivers/aiokafka.py:859) and
        `tp_end_offsets`; commit, rebalance, send and web metrics stay faust's. The pipeline counts
        its own events (`Metrics`, `Recent`).
        Can go: if faust's monitor gets cheap per-event hooks (no upstream issue).
        """

        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            self.tp_read_offsets[tp] = offset

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            self.stream_inbound_time[tp] = monotonic()

        def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
            pass

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            pass

        def on_table_get(self, table: Any, key: Any) -> None:
            pass

        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            pass

        def on_table_del(self, table: Any, key: Any) -> None:
            pass

        def track_tp_end_offset(self, tp: Any, offset: int) -> None:
            self.tp_end_offsets[tp] = offset

    return LeanMonitor


def install_lean_monitor(app: Any, registry: Any) -> None:
    """`app.monitor` = a `LeanMonitor` writing faust's remaining metrics into `registry`."""
    from faust.sensors.prometheus import FaustMetrics

    app.monitor = _lean_monitor_class()(metrics=FaustMetrics.create(registry, "faust"))
