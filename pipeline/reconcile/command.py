"""`pipeline reconcile`: ask the owning service's API about lost ends and stuck nodes, and write what
it answered into the resource's relay topic (docs/reconcile.md)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from .. import catalog, codec, events, preflight, registry
from ..config import KAFKA, VALUE_FORMAT, ConfigError, Group, Setting, add_settings, kafka_client_kwargs

__all__ = ["SETTINGS", "configure", "run"]

SETTINGS: tuple[Group, ...] = (
    Group("the cloud (openstacksdk)", (
        Setting("--os-cloud", "OS_CLOUD",
                "the entry of clouds.yaml to use (credentials, endpoints, TLS, as every OpenStack client reads them; a "
                "reader role is enough: docs/reconcile.md)"),
        Setting("--os-client-config-file", "OS_CLIENT_CONFIG_FILE",
                "clouds.yaml to read instead of the standard places (./, ~/.config/openstack/, /etc/openstack/)",
                shown_default="the standard places"),
        Setting("--request-timeout", "RECONCILE_REQUEST_TIMEOUT", "how long one API request may take, s", 10.0, float),
        Setting("--concurrency", "RECONCILE_CONCURRENCY", "API requests in flight at most", 4, int),
    )),
    KAFKA,
    registry.SETTINGS,
    Group("reconcile", (
        VALUE_FORMAT,
        Setting("--output-prefix", "OUTPUT_TOPIC_PREFIX",
                "prefix of the worker's output topics: the alerts are read from <prefix>alerts, the sweep's node "
                "states from <prefix>node-state", "pipeline."),
        Setting("--group-id", "RECONCILE_GROUP_ID",
                "consumer group of the alerts: replicas in one group share the alerts", "pipeline-reconciler"),
        Setting("--resources", "RECONCILE_RESOURCES",
                "also ask once about each resource listed in this file (a line: UUID of a node, or FAMILY UUID with "
                "FAMILY baremetal.node, image or task; # comments)"),
        Setting("--recheck", "RECONCILE_RECHECK",
                "an answer that shows the operation still running is asked again after this, doubling each time, s",
                60.0, float),
        Setting("--retry-max", "RECONCILE_RETRY_MAX", "the longest wait between two questions of one job, s",
                300.0, float),
        Setting("--give-up-after", "RECONCILE_GIVE_UP_AFTER",
                "stop asking about an operation still running this long after its start (or a node after it became "
                "stuck), s; failed requests are retried regardless", 3600.0, float),
        Setting("--sweep-interval", "RECONCILE_SWEEP_INTERVAL",
                "every this many s, page through Ironic's nodes and ask about each whose power or provision state or "
                "maintenance differs from the node-state table; 0 = no sweep", 0.0, float),
        Setting("--sweep-page-size", "RECONCILE_SWEEP_PAGE_SIZE", "nodes per page of the sweep", 200, int),
        Setting("--sweep-pages-per-second", "RECONCILE_SWEEP_PAGES_PER_SECOND",
                "the sweep asks for at most this many pages a second", 2.0, float),
        Setting("--source-label", "RECONCILE_SOURCE_LABEL",
                "what observations name as their source (the demo's simulator says so)",
                shown_default="the service: ironic, glance"),
        Setting("--once", "RECONCILE_ONCE",
                "read the alerts there are now (and --resources), answer them (with --sweep-interval: after one "
                "sweep), and exit", False, kind="switch"),
    )),
    Group("running", (
        Setting("--metrics-port", "RECONCILE_METRICS_PORT", "Prometheus /metrics port, 0 disables", 9110, int),
        Setting("--metrics-addr", "RECONCILE_METRICS_ADDR", "address /metrics listens on", "127.0.0.1"),
        Setting("--log-level", "LOG_LEVEL", "log level", "info", choices=("debug", "info", "warning", "error")),
    )),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, SETTINGS)


def _check(args: argparse.Namespace) -> None:
    for name in ("request_timeout", "concurrency", "recheck", "retry_max", "give_up_after", "sweep_page_size",
                 "sweep_pages_per_second"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, not {getattr(args, name)}")
    if args.sweep_interval < 0:
        raise ConfigError(f"--sweep-interval must not be negative, not {args.sweep_interval}")
    if not 0 <= args.metrics_port < 65536:
        raise ConfigError(f"--metrics-port {args.metrics_port} is not a port")


def _listed(path: str | None) -> list:
    from .jobs import from_line

    if not path:
        return []
    try:
        lines = sys.stdin.readlines() if path == "-" else open(path, encoding="utf-8").readlines()  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"--resources {path}: {exc.strerror}") from None
    out = []
    for number, line in enumerate(lines, 1):
        try:
            job = from_line(line, time.time())
        except ValueError as exc:
            raise ConfigError(f"--resources {path} line {number}: {exc}") from None
        if job is not None:
            out.append(job)
    return out


def run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from ..bridge.service import install_signal_handlers
    from ..bridge.sink import KafkaSink, SinkSettings
    from .api import Api, connect
    from .service import Reconciler, ReconcileSettings

    _check(args)
    listed = _listed(args.resources)
    conn = connect(args.os_cloud, args.os_client_config_file, args.request_timeout)
    client = kafka_client_kwargs(args)
    schemas = registry.from_args(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s reconcile: %(message)s")
    for noisy in ("aiokafka", "keystoneauth", "openstack", "urllib3"):  # our own lines say what happens
        logging.getLogger(noisy).setLevel(logging.CRITICAL if args.log_level != "debug" else logging.DEBUG)
    settings = ReconcileSettings(
        client=client, alerts_topic=f"{args.output_prefix}alerts", node_state_topic=f"{args.output_prefix}node-state",
        topic_prefix=args.topic_prefix, group_id=args.group_id, concurrency=args.concurrency,
        recheck_s=args.recheck, retry_max_s=args.retry_max, give_up_s=args.give_up_after,
        sweep_interval_s=args.sweep_interval, sweep_page_size=args.sweep_page_size,
        sweep_pages_per_s=args.sweep_pages_per_second, once=args.once, source_label=args.source_label)
    if schemas is not None:
        registry.attach(schemas, {f"{events.topic_for(f, args.topic_prefix)}-value": codec.NOTIFICATION
                                  for f in catalog.OBSERVABLE})

    async def main() -> int:
        await preflight.check_kafka(client)
        stop = asyncio.Event()
        install_signal_handlers(stop)
        security = {k: v for k, v in client.items() if k != "bootstrap_servers"}
        sink = KafkaSink(SinkSettings(bootstrap_servers=client["bootstrap_servers"], security=security,
                                      client_id="pipeline-reconciler", linger_ms=5))
        if not await sink.start(stop):
            return 0
        server = None
        if args.metrics_port:
            server, _ = start_http_server(args.metrics_port, addr=args.metrics_addr)
        rc = Reconciler(settings, Api(conn, args.request_timeout), sink,
                        codec.Encoder(args.value_format, args.avro_framing), stop)
        rc.add_listed(listed)
        logging.getLogger("pipeline.reconcile").info(
            "asking %s about the alerts of %s%s", args.os_cloud, settings.alerts_topic,
            f", sweeping Ironic's nodes every {args.sweep_interval:g} s" if args.sweep_interval else "")
        try:
            await rc.run()
        finally:
            await sink.stop()
            if server is not None:
                server.shutdown()
        return 1 if rc.failures else 0

    return asyncio.run(main())
