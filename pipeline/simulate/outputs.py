"""Where the simulated notifications go: RabbitMQ through oslo.messaging (the real path), straight to
the relay topics in Kafka, or JSON lines on stdout.

Every output takes an `Event` and the `_unique_id` the rabbit driver would add; `render` gives the
wire body, its exchange and its routing key exactly as oslo's rabbit driver publishes them.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from pipeline.config import ConfigError

from . import payloads
from .model import Event

__all__ = ["KafkaOutput", "Output", "RabbitOutput", "StdoutOutput", "Topics", "render"]


@dataclass(frozen=True)
class Topics:
    """oslo topics (routing key = topic.priority) and exchanges (control_exchange) per service."""

    ironic: str = "ironic_versioned_notifications"
    glance: str = "notifications"
    ironic_exchange: str = "ironic"
    glance_exchange: str = "glance"

    def topic(self, service: str) -> str:
        return self.ironic if service == "ironic" else self.glance

    def exchange(self, service: str) -> str:
        return self.ironic_exchange if service == "ironic" else self.glance_exchange


def message_of(event: Event) -> dict[str, Any]:
    return payloads.message(event.message_id, event.publisher_id, event.event_type, event.priority,
                            event.payload, event.timestamp)


def render(event: Event, unique_id: str, topics: Topics = Topics()) -> tuple[bytes, str, str]:
    """(body, exchange, routing key) as oslo's rabbit driver publishes `event` under messagingv2."""
    body = payloads.wire_body(message_of(event), event.context, unique_id)
    return body, topics.exchange(event.service), f"{topics.topic(event.service)}.{event.priority.lower()}"


class Output(Protocol):
    description: str

    @property
    def failures(self) -> int: ...

    async def start(self) -> None: ...
    async def send(self, event: Event, unique_id: str) -> None: ...
    async def close(self) -> None: ...


class StdoutOutput:
    """One line per message: the AMQP body as published, or (`capture`) the capture object
    {"exchange", "routing_key", "body"} that `pipeline inspect` and `pipeline bridge --source` read."""

    def __init__(self, topics: Topics, capture: bool = False, stream: Any = None) -> None:
        self.topics, self.capture = topics, capture
        # one large buffer: a write per 3 KB message would be a system call each
        self.stream = stream or open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
        self.description = "stdout"
        self.failures = 0

    async def start(self) -> None:
        pass

    async def send(self, event: Event, unique_id: str) -> None:
        body, exchange, routing_key = render(event, unique_id, self.topics)
        if self.capture:
            import orjson
            body = orjson.dumps({"exchange": exchange, "routing_key": routing_key, "body": body.decode()})
        try:
            self.stream.write(body + b"\n")
        except BrokenPipeError:  # `| head`: the reader is gone, nothing more to write
            self.failures += 1
            raise

    async def close(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            pass


def oslo_url(amqp_url: str) -> str:
    """oslo's transport URL for an AMQP URL: the rabbit driver, same credentials, host and vhost."""
    parts = urlsplit(amqp_url)
    if parts.scheme not in ("amqp", "amqps", "rabbit"):
        raise ConfigError(f"--amqp-url {parts.scheme}://...: expected amqp:// (or rabbit://)")
    url = urlunsplit(parts._replace(scheme="rabbit"))
    return url + ("?ssl=1" if parts.scheme == "amqps" and "ssl=" not in url else "")


class _FailureCounter(logging.Handler):
    """oslo's MessagingDriver.notify logs a failed send and swallows it (the at-most-once contract);
    we count those lines so the summary can say how many notifications never left."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = record.getMessage().splitlines()[0][:200]


class RabbitOutput:
    """oslo.messaging's own rabbit driver, one transport per service because the exchange is the
    transport's `control_exchange` (Ironic sets `ironic`, Glance `glance`, via set_transport_defaults).

    Why the driver level and not `Notifier.info()`: `Notifier._notify` stamps `message_id` with a
    fresh uuid4 and `timestamp` with the wall clock, and the simulator needs both under its control
    (a duplicate is the same message_id sent twice; timestamps follow the simulated clock). So we
    build the very dict `_notify` builds (message_id, publisher_id, event_type, priority, payload,
    timestamp) and hand it, with the serialized context, to each loaded driver's
    `notify(ctxt, message, priority, retry)`, exactly as `_notify`'s `do_notify` does. Everything
    from there on (target `<topic>.<priority>`, `_unique_id`, `_context_*`, the 2.0 envelope,
    kombu's JSON, exchange and default-queue declaration, publisher confirms) is oslo's own code.
    The driver adds its own `_unique_id`, so a duplicate carries a new one: only message_id repeats.
    """

    def __init__(self, transport_url: str, topics: Topics, retry: int = 3) -> None:
        self.url = transport_url  # oslo's: rabbit://... (see `oslo_url`), kombu+memory:// in unit tests
        self.topics = topics
        self.retry = retry
        self.description = f"RabbitMQ via oslo.messaging (exchanges {topics.ironic_exchange}, {topics.glance_exchange})"
        self._drivers: dict[str, list[Any]] = {}
        self._transports: list[Any] = []
        self._errors = _FailureCounter()

    @property
    def failures(self) -> int:
        return self._errors.count

    async def start(self) -> None:
        try:
            import warnings

            with warnings.catch_warnings():  # oslo.messaging's eventlet import warns on every start
                warnings.simplefilter("ignore")
                import oslo_messaging
                from oslo_config import cfg
        except ImportError:
            raise ConfigError("--output rabbit needs oslo.messaging (pip install -e '.[test]')") from None
        logging.getLogger("oslo_messaging.notify.messaging").addHandler(self._errors)
        for service in ("ironic", "glance"):
            conf = cfg.ConfigOpts()
            conf([], project="pipeline-simulate", default_config_files=[], default_config_dirs=[])
            conf.register_opts(oslo_messaging.transport._transport_opts)
            conf.set_override("control_exchange", self.topics.exchange(service))
            transport = oslo_messaging.get_notification_transport(conf, url=self.url)
            self._transports.append(transport)
            notifier = oslo_messaging.Notifier(transport, driver="messagingv2", topics=[self.topics.topic(service)])
            self._drivers[service] = [ext.obj for ext in notifier._driver_mgr.extensions]
        if self.url.startswith("rabbit://"):
            await asyncio.to_thread(self._probe)

    def _probe(self) -> None:
        """Connect now, so a wrong URL is a one-line error before the run, not a logged failure per message."""
        import kombu

        try:
            with kombu.Connection(self.url.replace("rabbit://", "amqp://", 1).split("?")[0], connect_timeout=5) as c:
                c.connect()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker is the same answer
            raise ConfigError(f"RabbitMQ at {self.url.split('@')[-1]} unreachable: {str(exc).splitlines()[0]}") from None

    async def send(self, event: Event, unique_id: str) -> None:
        message = message_of(event)
        context = event.context or {}
        for driver in self._drivers[event.service]:
            # the driver adds _unique_id and _context_* to the dict it is given: a copy each time
            driver.notify(dict(context), dict(message), event.priority, self.retry)

    async def close(self) -> None:
        for transport in self._transports:
            transport.cleanup()
        logging.getLogger("oslo_messaging.notify.messaging").removeHandler(self._errors)


class _EventSource:
    """The bridge's Source protocol over the simulator: `--output kafka` is the bridge's own relay
    (events.normalize, codec.encode_event, Java partitioning, headers, topic creation) minus RabbitMQ."""

    def __init__(self, maxsize: int = 10000) -> None:
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.description = "the fleet simulator"

    async def __aiter__(self) -> AsyncIterator[Any]:
        from pipeline.bridge.sources import Delivery

        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield Delivery(*item)

    def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass


class KafkaOutput:
    def __init__(self, bootstrap_servers: list[str], topic_prefix: str, partitions: int, value_format: str,
                 topics: Topics, security: dict | None = None) -> None:
        self.bootstrap_servers, self.topic_prefix = bootstrap_servers, topic_prefix
        self.security = security or {}  # TLS/SASL arguments of config.kafka_client_kwargs
        self.partitions, self.value_format, self.topics = partitions, value_format, topics
        self.description = f"Kafka {','.join(bootstrap_servers)} relay topics {topic_prefix}*"
        self.failures = 0
        self._source = _EventSource()
        self._task: asyncio.Task | None = None
        self.relay: Any = None

    async def start(self) -> None:
        from pipeline.bridge.relay import BridgeSettings
        from pipeline.bridge.service import run_bridge
        from pipeline.bridge.sink import SinkSettings

        settings = BridgeSettings(
            sink=SinkSettings(bootstrap_servers=self.bootstrap_servers, topic_partitions=self.partitions,
                              compression="none", client_id="pipeline-simulate", security=self.security),
            topic_prefix=self.topic_prefix, value_format=self.value_format, metrics_port=0,
        )
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()

        def on_ready(relay: Any) -> None:
            self.relay = relay
            ready.set_result(None)

        self._task = asyncio.create_task(run_bridge(settings, self._source, self._stop, on_ready))
        done, _ = await asyncio.wait({self._task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            self._stop.set()
            await asyncio.gather(self._task, return_exceptions=True)
            raise ConfigError(f"Kafka at {','.join(self.bootstrap_servers)} unreachable")

    async def send(self, event: Event, unique_id: str) -> None:
        await self._source.queue.put(render(event, unique_id, self.topics))

    async def close(self) -> None:
        await self._source.queue.put(None)
        if self._task is not None:
            relay = await self._task
            self.failures = relay.deadlettered
