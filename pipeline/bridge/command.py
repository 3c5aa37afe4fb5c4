"""`pipeline bridge`: relay notifications from RabbitMQ (or files, or oslo's Kafka topics) to Kafka."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from pipeline import codec, preflight, registry
from pipeline.config import (
    AMQP,
    KAFKA,
    VALUE_FORMAT,
    ConfigError,
    Group,
    Setting,
    add_settings,
    amqp_connect_kwargs,
    kafka_client_kwargs,
)

from . import sink as sink_mod
from .heartbeat import Heartbeat, HeartbeatSettings, QueueDepth, default_bridge_id
from .relay import BridgeSettings, Relay
from .routing import MIN_PRIORITIES, catalog_topics, deadletter_topic
from .service import install_signal_handlers, run_bridge
from .sink import SinkSettings
from .sources import (
    AmqpSettings,
    AmqpSource,
    LinesSource,
    OsloKafkaSettings,
    OsloKafkaSource,
    Source,
    parse_binding,
)

DEFAULT_BINDINGS = ("ironic:ironic_versioned_notifications.*", "glance:notifications.*")


SETTINGS: tuple[Group, ...] = (
    Group("relay", (
        Setting("--source", "BRIDGE_SOURCE",
                "amqp (the bridge's queue on RabbitMQ), file:PATH or - (JSON lines: bodies or capture objects), "
                "oslo-kafka:TOPIC[,TOPIC] (oslo.messaging's Kafka driver topics TOPIC.<priority>)", "amqp"),
        Setting("--min-priority", "MIN_PRIORITY",
                "relay only notifications at this priority or above, like Ironic's notification_level "
                "(debug < info < warning < error < critical; audit and sample rank as info); the others are "
                "acked and counted", "debug", choices=MIN_PRIORITIES),
        VALUE_FORMAT,
    )),
    KAFKA,
    registry.SETTINGS,
    Group("Kafka producer and topics", (
        Setting("--topic-replication-factor", "TOPIC_REPLICATION_FACTOR",
                "replication factor of topics the bridge creates", 1, int),
        Setting("--precreate-topics", "BRIDGE_PRECREATE_TOPICS",
                "create the relay topic of every catalog family and the dead-letter topic at start; other "
                "families' topics are created on first sight", True, kind="toggle"),
        Setting("--kafka-compression", "KAFKA_COMPRESSION",
                "producer batch compression; gzip costs about a fifth of the relay rate here (aiokafka compresses "
                "at level 9 on the event loop); lz4, zstd and snappy need the cramjam package", "none",
                choices=tuple(sink_mod.COMPRESSIONS)),
        Setting("--kafka-linger-ms", "KAFKA_LINGER_MS",
                "how long a record waits for others when nothing is with Kafka; under load each produce round goes as "
                "soon as the one before it is acknowledged, ms", 10, int),
        Setting("--kafka-max-batch-bytes", "KAFKA_MAX_BATCH_BYTES", "producer batch size per partition",
                512 * 1024, int),
        Setting("--kafka-max-request-bytes", "KAFKA_MAX_REQUEST_BYTES",
                "largest produce request, so the largest record; bigger bodies are dead-lettered", 1024 * 1024, int),
    )),
    AMQP,
    Group("RabbitMQ queue", (
        Setting("--amqp-queue", "AMQP_QUEUE",
                "the bridge's own queue, so it never takes messages from the shared queues Ceilometer and "
                "others read", "kafka-bridge"),
        Setting("--amqp-binding", "AMQP_BINDINGS", "bind the queue on this topic exchange and routing key; repeatable",
                list(DEFAULT_BINDINGS), kind="list", metavar="EXCHANGE:ROUTING_KEY"),
        Setting("--amqp-exchange-durable", "AMQP_EXCHANGE_DURABLE",
                "declare the exchanges durable: must match oslo's amqp_durable_queues / rabbit_quorum_queue or "
                "RabbitMQ refuses", False, kind="toggle"),
        Setting("--amqp-queue-durable", "AMQP_QUEUE_DURABLE",
                "the bridge's queue survives a broker restart; RabbitMQ 4.3 refuses transient non-exclusive "
                "queues by default", True, kind="toggle"),
        Setting("--amqp-queue-type", "AMQP_QUEUE_TYPE", "x-queue-type of the bridge's queue; quorum implies durable",
                "classic", choices=("classic", "quorum")),
        Setting("--amqp-passive", "AMQP_PASSIVE", "declare nothing: the queue and its bindings exist already",
                False, kind="toggle"),
        Setting("--amqp-prefetch", "AMQP_PREFETCH",
                "unacked deliveries RabbitMQ sends at most; bounds the bridge's memory", 1000, int),
        Setting("--amqp-intake-ms", "AMQP_INTAKE_MS",
                "after a delivery, leave RabbitMQ's socket unread this long, ms, so the deliveries that follow are "
                "read, relayed and acked together (fewer wake-ups when events come in bursts or faster than one "
                "per pause), for up to this much latency; 0 = read each at once", 10.0, float),
    )),
    Group("oslo Kafka source", (
        Setting("--oslo-kafka-group", "OSLO_KAFKA_GROUP", "consumer group on oslo's Kafka topics", "kafka-bridge"),
        Setting("--oslo-kafka-bootstrap-servers", "OSLO_KAFKA_BOOTSTRAP_SERVERS",
                "Kafka that oslo.messaging writes to, when not the target Kafka",
                shown_default="--kafka-bootstrap-servers"),
    )),
    Group("running", (
        Setting("--max-in-flight", "BRIDGE_MAX_IN_FLIGHT",
                "deliveries awaiting Kafka's ack at most, for file and oslo-kafka sources (AMQP uses "
                "--amqp-prefetch)", 1000, int),
        Setting("--shutdown-timeout", "BRIDGE_SHUTDOWN_TIMEOUT",
                "seconds SIGTERM waits for in-flight records before closing; the rest are redelivered later",
                10.0, float),
        Setting("--metrics-port", "BRIDGE_METRICS_PORT", "Prometheus /metrics port, 0 disables", 9108, int),
        Setting("--metrics-addr", "BRIDGE_METRICS_ADDR", "address /metrics listens on", "127.0.0.1"),
        Setting("--heartbeat-interval", "BRIDGE_HEARTBEAT_INTERVAL",
                "seconds between heartbeats, written into every relay partition while the bridge is caught up, so the "
                "workers' clocks move on quiet partitions; 0 disables", 5.0, float),
        Setting("--bridge-id", "BRIDGE_ID", "this bridge in its heartbeats, unique among the replicas (the pod name in "
                "Kubernetes)", shown_default="host name and process id"),
        Setting("--log-level", "LOG_LEVEL", "log level", "info", choices=("debug", "info", "warning", "error")),
    )),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, SETTINGS)


def _positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")


def settings_from_args(args: argparse.Namespace) -> BridgeSettings:
    for name in ("topic_partitions", "topic_replication_factor", "amqp_prefetch", "max_in_flight",
                 "kafka_max_batch_bytes", "kafka_max_request_bytes", "shutdown_timeout"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    for name in ("kafka_linger_ms", "amqp_intake_ms"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative, not {getattr(args, name)}")
    if not 0 <= args.metrics_port < 65536:
        raise ConfigError(f"--metrics-port {args.metrics_port} is not a port")
    sink_mod.check_compression(args.kafka_compression)
    if args.value_format not in codec.VALUE_FORMATS:
        raise ConfigError(f"--value-format {args.value_format!r}: one of {', '.join(codec.VALUE_FORMATS)}")
    amqp = args.source == "amqp"
    max_request = args.kafka_max_request_bytes
    client = kafka_client_kwargs(args)
    return BridgeSettings(
        sink=SinkSettings(
            bootstrap_servers=client.pop("bootstrap_servers"),
            security=client,
            topic_partitions=args.topic_partitions,
            replication_factor=args.topic_replication_factor,
            compression=args.kafka_compression,
            linger_ms=args.kafka_linger_ms,
            max_batch_bytes=min(args.kafka_max_batch_bytes, max_request),
            max_request_bytes=max_request,
        ),
        topic_prefix=args.topic_prefix,
        value_format=args.value_format,
        avro_framing=args.avro_framing,
        min_priority=args.min_priority,
        max_in_flight=args.amqp_prefetch if amqp else args.max_in_flight,
        precreate_topics=args.precreate_topics,
        shutdown_timeout_s=args.shutdown_timeout,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        # a normalized event is a little larger than its body; the value must fit a request
        max_body_bytes=max_request - 16 * 1024,
    )


def heartbeat_from_args(args: argparse.Namespace) -> HeartbeatSettings:
    if args.heartbeat_interval < 0:
        raise ConfigError(f"--heartbeat-interval must not be negative, not {args.heartbeat_interval}")
    bridge_id = (default_bridge_id() if args.bridge_id is None else args.bridge_id).strip()
    if not bridge_id:
        raise ConfigError("--bridge-id is empty")
    return HeartbeatSettings(interval_s=args.heartbeat_interval, bridge_id=bridge_id)


def heartbeat_for(hb: HeartbeatSettings, settings: BridgeSettings, source: Source, relay: Relay) -> Heartbeat | None:
    """The heartbeat writer of a running relay; None when off or the source cannot say it is caught up."""
    if not hb.interval_s:
        return None
    if not isinstance(source, AmqpSource):
        logging.getLogger("pipeline.bridge").info(
            "no heartbeats: the %s source cannot tell when it is caught up", source.description)
        return None
    relay_topics = [t for t in catalog_topics(settings.topic_prefix) if t != relay.deadletter_topic]
    return Heartbeat(hb, settings.sink, values=relay.values,
                     topics=lambda: [t for t in relay_topics if t in relay.sink.topics],
                     unconfirmed=lambda: relay.in_flight, backlog=QueueDepth(source.settings))


def source_from_args(args: argparse.Namespace, settings: BridgeSettings) -> Source:
    spec = args.source
    if spec == "amqp":
        bindings = tuple(parse_binding(b.strip()) for b in args.amqp_binding if b.strip())
        if not bindings and not args.amqp_passive:
            raise ConfigError("no AMQP bindings: give --amqp-binding EXCHANGE:ROUTING_KEY or AMQP_BINDINGS")
        if not args.amqp_queue:
            raise ConfigError("--amqp-queue is empty")
        connect = amqp_connect_kwargs(args)
        return AmqpSource(AmqpSettings(
            url=connect["url"], ssl_context=connect.get("ssl_context"), queue=args.amqp_queue, bindings=bindings,
            exchange_durable=args.amqp_exchange_durable, queue_durable=args.amqp_queue_durable,
            queue_type=args.amqp_queue_type, passive=args.amqp_passive, prefetch=args.amqp_prefetch,
            intake_ms=args.amqp_intake_ms,
        ))
    if spec == "-":
        return LinesSource("-", settings.max_body_bytes)
    if spec.startswith("file:") and len(spec) > 5:
        return LinesSource(spec[5:], settings.max_body_bytes)
    if spec.startswith("oslo-kafka:"):
        topics = tuple(t.strip() for t in spec[len("oslo-kafka:"):].split(",") if t.strip())
        if not topics:
            raise ConfigError("--source oslo-kafka: needs at least one topic, e.g. oslo-kafka:notifications")
        servers = args.oslo_kafka_bootstrap_servers or args.kafka_bootstrap_servers
        return OsloKafkaSource(OsloKafkaSettings(
            bootstrap_servers=servers.split(","), topics=topics, group=args.oslo_kafka_group,
            max_body_bytes=settings.max_body_bytes, security=settings.sink.security,
        ))
    raise ConfigError(f"--source {spec!r}: one of amqp, file:PATH, -, oslo-kafka:TOPIC[,TOPIC]")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    hb_settings = heartbeat_from_args(args)
    source = source_from_args(args, settings)
    schemas = registry.from_args(args)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s bridge: %(message)s",
    )
    if schemas is not None:  # every catalog family's subject now; a family seen later, on first sight
        deadletter = deadletter_topic(settings.topic_prefix)
        registry.attach(schemas, {f"{topic}-value": codec.NOTIFICATION
                                  for topic in catalog_topics(settings.topic_prefix) if topic != deadletter})
    # aiokafka and aiormq log every retry with a traceback; our own lines say what happens
    for noisy in ("aiokafka", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if args.log_level != "debug" else logging.DEBUG)

    async def main() -> int:
        # refused credentials or certificates end the bridge here, in one line; an absent broker
        # is waited for by the reconnect loops
        await preflight.check_kafka({"bootstrap_servers": settings.sink.bootstrap_servers, **settings.sink.security})
        if isinstance(source, AmqpSource):
            await preflight.check_amqp(source.settings.url, source.settings.ssl_context)
        stop = asyncio.Event()
        install_signal_handlers(stop)
        beating: list[asyncio.Task] = []

        def on_ready(relay: Relay) -> None:
            heartbeat = heartbeat_for(hb_settings, settings, source, relay)
            if heartbeat is not None:
                beating.append(asyncio.get_running_loop().create_task(heartbeat.run(stop)))

        try:
            await run_bridge(settings, source, stop, on_ready)
        finally:
            stop.set()  # the relay may have ended on its own (a refused declaration): so do the heartbeats
            for task in beating:
                task.cancel()
            await asyncio.gather(*beating, return_exceptions=True)
        return 0

    return asyncio.run(main())
