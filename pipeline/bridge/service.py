"""One bridge in a running event loop: the Kafka sink, the relay, the /metrics endpoint, and the
signals that stop it. `command.run` calls it for `pipeline bridge`, the simulator for its bridge."""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from . import metrics
from .relay import BridgeSettings, Relay
from .routing import REASON_CLASSES, catalog_topics
from .sink import KafkaSink
from .sources import Source

log = logging.getLogger("pipeline.bridge")


async def run_bridge(settings: BridgeSettings, source: Source, stop: asyncio.Event,
                     on_ready: Callable[[Relay], None] | None = None) -> Relay:
    """Run one bridge in the running event loop until `source` ends or `stop` is set.

    For the benchmark and tests: build `source` with `sources.AmqpSource(...)` /
    `sources.LinesSource(path)`, then `relay = await run_bridge(settings, source, stop)`;
    `relay.relayed`, `relay.deadlettered`, `relay.filtered` count what happened.
    """
    sink = KafkaSink(settings.sink)
    if not await sink.start(stop):
        return Relay(settings, source, sink)
    relay = Relay(settings, source, sink)
    server = None
    try:
        topics = list(settings.extra_topics) + [relay.deadletter_topic]
        if settings.precreate_topics:
            topics = catalog_topics(settings.topic_prefix) + list(settings.extra_topics)
        await sink.ensure_topics(topics)
        metrics.track(relay, REASON_CLASSES)
        server = metrics.serve(settings.metrics_port, settings.metrics_addr)
        if on_ready is not None:
            on_ready(relay)
        log.info("relaying from %s to %s* (value format %s, min priority %s)", source.description,
                 settings.topic_prefix, settings.value_format, settings.min_priority)
        await relay.run(stop)
    finally:
        await source.close()
        for task in list(relay._retries):
            task.cancel()
        await sink.stop(settings.shutdown_timeout_s)
        if server is not None:
            server.shutdown()
        log.info("stopped: %d relayed, %d dead-lettered, %d filtered",
                 relay.relayed, relay.deadlettered, relay.filtered)
    return relay


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM / SIGINT: stop taking deliveries, finish what is in flight, then exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
