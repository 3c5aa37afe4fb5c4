"""`pipeline bridge`: relay notifications from RabbitMQ (or files, or oslo's Kafka topics) to Kafka."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from pipeline import codec, preflight
from pipeline.config import (
    ConfigError,
    add_amqp_args,
    add_kafka_args,
    add_value_format_arg,
    amqp_connect_kwargs,
    env,
    env_float,
    env_int,
    kafka_client_kwargs,
)

from . import sink as sink_mod
from .heartbeat import Heartbeat, HeartbeatSettings, QueueDepth, default_bridge_id
from .relay import MIN_PRIORITIES, BridgeSettings, Relay, catalog_topics, install_signal_handlers, run_bridge
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

DEFAULT_BINDINGS = "ironic:ironic_versioned_notifications.*,glance:notifications.*"


def env_bool(name: str, default: bool) -> bool:
    raw = env(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", default=env("BRIDGE_SOURCE", "amqp"),
        help="amqp (the bridge's queue on RabbitMQ), file:PATH or - (JSON lines: bodies or capture "
             "objects), oslo-kafka:TOPIC[,TOPIC] (oslo.messaging's Kafka driver topics "
             "TOPIC.<priority>) (env BRIDGE_SOURCE; default %(default)s)")
    parser.add_argument(
        "--min-priority", choices=MIN_PRIORITIES, default=env("MIN_PRIORITY", "debug"),
        help="relay only notifications at this priority or above, like Ironic's notification_level "
             "(debug < info < warning < error < critical; audit and sample rank as info); the others "
             "are acked and counted (env MIN_PRIORITY; default %(default)s)")
    add_value_format_arg(parser)
    add_kafka_args(parser)
    k = parser.add_argument_group("Kafka producer and topics")
    k.add_argument("--topic-replication-factor", type=int, default=env_int("TOPIC_REPLICATION_FACTOR", 1),
                   help="replication factor of topics the bridge creates (env TOPIC_REPLICATION_FACTOR; "
                        "default %(default)s)")
    k.add_argument("--precreate-topics", action=argparse.BooleanOptionalAction,
                   default=env_bool("BRIDGE_PRECREATE_TOPICS", True),
                   help="create the relay topic of every catalog family and the dead-letter topic at start; "
                        "other families' topics are created on first sight (env BRIDGE_PRECREATE_TOPICS; "
                        "default %(default)s)")
    k.add_argument("--kafka-compression", choices=tuple(sink_mod.COMPRESSIONS),
                   default=env("KAFKA_COMPRESSION", "none"),
                   help="producer batch compression; gzip costs about a fifth of the relay rate here (aiokafka "
                        "compresses at level 9 on the event loop); lz4, zstd and snappy need the cramjam package "
                        "(env KAFKA_COMPRESSION; default %(default)s)")
    k.add_argument("--kafka-linger-ms", type=int, default=env_int("KAFKA_LINGER_MS", 10),
                   help="how long the producer waits to fill a batch (env KAFKA_LINGER_MS; default %(default)s)")
    k.add_argument("--kafka-max-batch-bytes", type=int, default=env_int("KAFKA_MAX_BATCH_BYTES", 512 * 1024),
                   help="producer batch size per partition (env KAFKA_MAX_BATCH_BYTES; default %(default)s)")
    k.add_argument("--kafka-max-request-bytes", type=int, default=env_int("KAFKA_MAX_REQUEST_BYTES", 1024 * 1024),
                   help="largest produce request, so the largest record; bigger bodies are dead-lettered "
                        "(env KAFKA_MAX_REQUEST_BYTES; default %(default)s)")
    add_amqp_args(parser)
    a = parser.add_argument_group("RabbitMQ queue")
    a.add_argument("--amqp-queue", default=env("AMQP_QUEUE", "kafka-bridge"),
                   help="the bridge's own queue, so it never takes messages from the shared queues "
                        "Ceilometer and others read (env AMQP_QUEUE; default %(default)s)")
    a.add_argument("--amqp-binding", action="append", metavar="EXCHANGE:ROUTING_KEY",
                   help="bind the queue on this topic exchange and routing key; repeatable "
                        f"(env AMQP_BINDINGS, comma-separated; default {DEFAULT_BINDINGS})")
    a.add_argument("--amqp-exchange-durable", action=argparse.BooleanOptionalAction,
                   default=env_bool("AMQP_EXCHANGE_DURABLE", False),
                   help="declare the exchanges durable: must match oslo's amqp_durable_queues / "
                        "rabbit_quorum_queue or RabbitMQ refuses (env AMQP_EXCHANGE_DURABLE; default %(default)s)")
    a.add_argument("--amqp-queue-durable", action=argparse.BooleanOptionalAction,
                   default=env_bool("AMQP_QUEUE_DURABLE", True),
                   help="the bridge's queue survives a broker restart; RabbitMQ 4.3 refuses transient "
                        "non-exclusive queues by default (env AMQP_QUEUE_DURABLE; default %(default)s)")
    a.add_argument("--amqp-queue-type", choices=("classic", "quorum"), default=env("AMQP_QUEUE_TYPE", "classic"),
                   help="x-queue-type of the bridge's queue; quorum implies durable "
                        "(env AMQP_QUEUE_TYPE; default %(default)s)")
    a.add_argument("--amqp-passive", action=argparse.BooleanOptionalAction, default=env_bool("AMQP_PASSIVE", False),
                   help="declare nothing: the queue and its bindings exist already (env AMQP_PASSIVE; "
                        "default %(default)s)")
    a.add_argument("--amqp-prefetch", type=int, default=env_int("AMQP_PREFETCH", 1000),
                   help="unacked deliveries RabbitMQ sends at most; bounds the bridge's memory "
                        "(env AMQP_PREFETCH; default %(default)s)")
    o = parser.add_argument_group("oslo Kafka source")
    o.add_argument("--oslo-kafka-group", default=env("OSLO_KAFKA_GROUP", "kafka-bridge"),
                   help="consumer group on oslo's Kafka topics (env OSLO_KAFKA_GROUP; default %(default)s)")
    o.add_argument("--oslo-kafka-bootstrap-servers", default=env("OSLO_KAFKA_BOOTSTRAP_SERVERS"),
                   help="Kafka that oslo.messaging writes to, when not the target Kafka "
                        "(env OSLO_KAFKA_BOOTSTRAP_SERVERS; default: --kafka-bootstrap-servers)")
    r = parser.add_argument_group("running")
    r.add_argument("--max-in-flight", type=int, default=env_int("BRIDGE_MAX_IN_FLIGHT", 1000),
                   help="deliveries awaiting Kafka's ack at most, for file and oslo-kafka sources "
                        "(AMQP uses --amqp-prefetch) (env BRIDGE_MAX_IN_FLIGHT; default %(default)s)")
    r.add_argument("--shutdown-timeout", type=float, default=float(env("BRIDGE_SHUTDOWN_TIMEOUT", "10") or 10),
                   help="seconds SIGTERM waits for in-flight records before closing; the rest are "
                        "redelivered later (env BRIDGE_SHUTDOWN_TIMEOUT; default %(default)s)")
    r.add_argument("--metrics-port", type=int, default=env_int("BRIDGE_METRICS_PORT", 9108),
                   help="Prometheus /metrics port, 0 disables (env BRIDGE_METRICS_PORT; default %(default)s)")
    r.add_argument("--metrics-addr", default=env("BRIDGE_METRICS_ADDR", "127.0.0.1"),
                   help="address /metrics listens on (env BRIDGE_METRICS_ADDR; default %(default)s)")
    r.add_argument("--heartbeat-interval", type=float, default=env_float("BRIDGE_HEARTBEAT_INTERVAL", 5.0),
                   help="seconds between heartbeats, written into every relay partition while the bridge is "
                        "caught up, so the workers' clocks move on quiet partitions; 0 disables "
                        "(env BRIDGE_HEARTBEAT_INTERVAL; default %(default)s)")
    r.add_argument("--bridge-id", default=env("BRIDGE_ID") or default_bridge_id(),
                   help="this bridge in its heartbeats, unique among the replicas (env BRIDGE_ID, the pod name "
                        "in Kubernetes; default host name and process id)")
    r.add_argument("--log-level", default=env("LOG_LEVEL", "info"),
                   choices=("debug", "info", "warning", "error"), help="(env LOG_LEVEL; default %(default)s)")


def _positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be positive, not {value}")


def settings_from_args(args: argparse.Namespace) -> BridgeSettings:
    for name in ("topic_partitions", "topic_replication_factor", "amqp_prefetch", "max_in_flight",
                 "kafka_max_batch_bytes", "kafka_max_request_bytes", "shutdown_timeout"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.kafka_linger_ms < 0:
        raise ConfigError(f"--kafka-linger-ms must not be negative, not {args.kafka_linger_ms}")
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
    if not args.bridge_id.strip():
        raise ConfigError("--bridge-id is empty")
    return HeartbeatSettings(interval_s=args.heartbeat_interval, bridge_id=args.bridge_id.strip())


def heartbeat_for(hb: HeartbeatSettings, settings: BridgeSettings, source: Source, relay: Relay) -> Heartbeat | None:
    """The heartbeat writer of a running relay; None when off or the source cannot say it is caught up."""
    if not hb.interval_s:
        return None
    if not isinstance(source, AmqpSource):
        logging.getLogger("pipeline.bridge").info(
            "no heartbeats: the %s source cannot tell when it is caught up", source.description)
        return None
    relay_topics = [t for t in catalog_topics(settings.topic_prefix) if t != relay.deadletter_topic]
    return Heartbeat(hb, settings.sink, value_format=settings.value_format,
                     topics=lambda: [t for t in relay_topics if t in relay.sink.topics],
                     unconfirmed=lambda: relay.in_flight, backlog=QueueDepth(source.settings))


def source_from_args(args: argparse.Namespace, settings: BridgeSettings) -> Source:
    spec = args.source
    if spec == "amqp":
        raw = args.amqp_binding or [b for b in (env("AMQP_BINDINGS", DEFAULT_BINDINGS) or "").split(",") if b.strip()]
        bindings = tuple(parse_binding(b.strip()) for b in raw)
        if not bindings and not args.amqp_passive:
            raise ConfigError("no AMQP bindings: give --amqp-binding EXCHANGE:ROUTING_KEY or AMQP_BINDINGS")
        if not args.amqp_queue:
            raise ConfigError("--amqp-queue is empty")
        connect = amqp_connect_kwargs(args)
        return AmqpSource(AmqpSettings(
            url=connect["url"], ssl_context=connect.get("ssl_context"), queue=args.amqp_queue, bindings=bindings,
            exchange_durable=args.amqp_exchange_durable, queue_durable=args.amqp_queue_durable,
            queue_type=args.amqp_queue_type, passive=args.amqp_passive, prefetch=args.amqp_prefetch,
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
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s bridge: %(message)s",
    )
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
            for task in beating:
                task.cancel()
            await asyncio.gather(*beating, return_exceptions=True)
        return 0

    return asyncio.run(main())
