"""`pipeline worker`: the stream agents and their web views, as one faust worker process."""
from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import resource
import sys
import time

import orjson

from .. import catalog, codec, registry
from ..config import KAFKA, VALUE_FORMAT, ConfigError, Group, Setting, add_settings, kafka_client_kwargs
from .models import Settings

__all__ = ["configure", "run", "settings_from_args"]


def parse_deadlines(items: list[str]) -> dict[str, float]:
    """``OPERATION=SECONDS`` items (flags, or comma-separated in DEADLINES)."""
    out: dict[str, float] = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, seconds = part.partition("=")
            try:
                value = float(seconds)
            except ValueError:
                value = -1.0
            if not sep or not name or value <= 0:
                raise ConfigError(f"deadline {part!r} is not OPERATION=SECONDS with SECONDS > 0 "
                                  f"(e.g. baremetal.node.power_set=300)")
            out[name.strip()] = value
    return out


SETTINGS: tuple[Group, ...] = (
    KAFKA,
    registry.SETTINGS,
    Group("worker", (
        VALUE_FORMAT,
        Setting("--app-id", "WORKER_APP_ID", "faust app id: consumer group and table changelog prefix",
                "pipeline-worker"),
        Setting("--output-prefix", "OUTPUT_TOPIC_PREFIX", "prefix of the output topics operations, node-state, alerts",
                "pipeline."),
        Setting("--replication", "TOPIC_REPLICATION_FACTOR", "replication factor of topics the worker creates", 1, int),
        Setting("--store", "WORKER_STORE", "table store: rocksdb:// (production) or memory:// (tests)", "rocksdb://"),
        Setting("--data-dir", "WORKER_DATA_DIR", "directory of the RocksDB tables", ".worker-data"),
        Setting("--rocksdb-cache-mb", "WORKER_ROCKSDB_CACHE_MB", "RocksDB block cache per table partition, MiB", 64, int),
        Setting("--session-timeout", "WORKER_SESSION_TIMEOUT",
                "a worker that died without leaving its group is replaced after this, s", 30.0, float),
        Setting("--group-instance-id", "WORKER_GROUP_INSTANCE_ID",
                "static group membership (e.g. the StatefulSet pod name): a restarted worker takes its partitions "
                "back at once, without waiting for the session timeout"),
        Setting("--web-host", "WORKER_WEB_HOST", "host name other workers reach this one's web views at", "127.0.0.1"),
        Setting("--web-port", "WORKER_WEB_PORT", "web views port", 6066, int),
        Setting("--web-bind", "WORKER_WEB_BIND", "address the web server binds", "127.0.0.1"),
        Setting("--no-web", "WORKER_WEB_ENABLED", "no web server (WORKER_WEB_ENABLED=0)", False, kind="switch",
                from_env=lambda raw: raw.strip() == "0", shown_default="web on"),
    )),
    Group("watchdog (event time)", (
        Setting("--deadline", "DEADLINES",
                "deadline of an operation's end, overriding the catalog's; repeatable (the variable: comma-separated)",
                kind="list", metavar="OPERATION=SECONDS", shown_default="the catalog's"),
        Setting("--default-deadline", "DEFAULT_DEADLINE", "deadline of operations the catalog has none for, s",
                catalog.DEFAULT_DEADLINE_S, float),
        Setting("--stuck-after", "STUCK_AFTER",
                "a node in a transitional provision state longer than this raises stuck_state, s", 3600.0, float),
        Setting("--orphan-grace", "ORPHAN_GRACE", "how long an end waits for its start before orphan_end, s",
                300.0, float),
        Setting("--lateness", "WATERMARK_LATENESS", "the watermark trails the newest event time of a partition by this, s",
                60.0, float),
        Setting("--late-horizon", "LATE_HORIZON", "after missing_end, how long a late end is still paired, s",
                86400.0, float),
        Setting("--dedup-window", "DEDUP_WINDOW", "message ids remembered per resource, s of event time", 3600.0, float),
        Setting("--dedup-max-ids", "DEDUP_MAX_IDS", "... and at most this many per resource", 32, int),
        Setting("--batch-size", "WORKER_BATCH_SIZE",
                "relay records the agent folds in one batch, at most (a batch is what the stream has buffered): each "
                "resource's state is written once per batch (and kept parsed between batches)", 1000, int),
        Setting("--fetch-partition-mb", "WORKER_FETCH_PARTITION_MB",
                "the most the consumer fetches of one partition in one request, MB: it fetches again only once the "
                "previous fetch is handed over, so under a backlog a larger fetch keeps the agent fed; memory: up to "
                "this much per assigned partition", 4, int),
        Setting("--fetch-min-kb", "WORKER_FETCH_MIN_KB",
                "the broker answers a fetch once this much is there, or after --fetch-wait-ms, KB; 0 = as soon as one "
                "record is (faust's). Under a trickle fewer, fuller fetches cost the worker and the broker far less "
                "CPU (at 300 events/s: 0.50 -> 0.18 of a core with 64), for up to --fetch-wait-ms more latency",
                0, int),
        Setting("--fetch-wait-ms", "WORKER_FETCH_WAIT_MS",
                "with --fetch-min-kb: the longest the broker holds a fetch, ms (the most a record waits at a trickle)",
                50, int),
        Setting("--replay-guard", "REPLAY_GUARD",
                "on assignment, re-read this much (s before the newest record) of each output partition so a replay "
                "does not publish twice; 0 = off", 30.0, float),
    )),
    Group("running", (
        Setting("--stop-timeout", "WORKER_STOP_TIMEOUT",
                "after SIGTERM or SIGINT, a clean stop that has not ended after this is cut short: the stacks "
                "are logged and the worker exits with status 4 (so does a second signal), s; keep it below the "
                "pod's termination grace period", 60.0, float),
        Setting("--stall-timeout", "WORKER_STALL_TIMEOUT",
                "records wait (or a batch is held) and the agent has finished no batch for this long, or the "
                "event loop has not turned: /healthz fails, pipeline_agent_stalled is 1, the stacks are "
                "logged; after half as long again the worker exits with status 3, s; 0 = off", 120.0, float),
        Setting("--stop-after", "WORKER_STOP_AFTER",
                "exit after reading this many relay records and print a JSON summary (benchmarks; 0 = never)", 0, int),
        Setting("--loglevel", "WORKER_LOGLEVEL", "log level", "warning", choices=("debug", "info", "warning", "error")),
    )),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, SETTINGS)


def settings_from_args(args: argparse.Namespace):
    from .app import WorkerSettings

    deadlines = dict(catalog.OPERATIONS)
    deadlines.update(parse_deadlines([d for d in args.deadline or () if d]))
    for name, value in (("--stuck-after", args.stuck_after), ("--orphan-grace", args.orphan_grace),
                        ("--late-horizon", args.late_horizon), ("--dedup-window", args.dedup_window),
                        ("--default-deadline", args.default_deadline)):
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, not {value:g}")
    if args.stop_timeout <= 0:
        raise ConfigError(f"--stop-timeout must be > 0, not {args.stop_timeout:g}")
    if args.stall_timeout < 0 or 0 < args.stall_timeout < 5:
        raise ConfigError(f"--stall-timeout must be 0 (off) or at least 5 s, not {args.stall_timeout:g}")
    if not 6 <= args.session_timeout <= 300:
        raise ConfigError(f"--session-timeout must be between 6 and 300 s, not {args.session_timeout:g}")
    if args.lateness < 0:
        raise ConfigError(f"--lateness must be >= 0, not {args.lateness:g}")
    if args.dedup_max_ids < 1:
        raise ConfigError("--dedup-max-ids must be >= 1")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if not 1 <= args.fetch_partition_mb <= 64:
        raise ConfigError(f"--fetch-partition-mb must be between 1 and 64, not {args.fetch_partition_mb}")
    if not 0 <= args.fetch_min_kb <= 16384:
        raise ConfigError(f"--fetch-min-kb must be between 0 and 16384, not {args.fetch_min_kb}")
    if not 1 <= args.fetch_wait_ms <= 1500:
        raise ConfigError(f"--fetch-wait-ms must be between 1 and 1500, not {args.fetch_wait_ms}")
    if args.topic_partitions < 1:
        raise ConfigError("--topic-partitions must be >= 1")
    if not (args.store.startswith("memory://") or args.store.startswith("rocksdb://")):
        raise ConfigError(f"--store {args.store!r}: use memory:// or rocksdb://")
    if args.store.startswith("rocksdb://") and importlib.util.find_spec("rocksdict") is None:
        raise ConfigError("--store rocksdb:// needs the rocksdict package")
    machine = Settings(
        deadlines=deadlines, default_deadline_s=args.default_deadline, orphan_grace_s=args.orphan_grace,
        stuck_after_s=args.stuck_after, late_horizon_s=args.late_horizon,
        dedup_window_s=args.dedup_window, dedup_max_ids=args.dedup_max_ids,
    )
    return WorkerSettings(
        machine=machine, app_id=args.app_id,
        bootstrap_servers=tuple(s.strip() for s in args.kafka_bootstrap_servers.split(",") if s.strip()),
        kafka={k: v for k, v in kafka_client_kwargs(args).items() if k != "bootstrap_servers"},
        topic_prefix=args.topic_prefix, output_prefix=args.output_prefix, partitions=args.topic_partitions,
        replication=args.replication, value_format=args.value_format, avro_framing=args.avro_framing,
        store=args.store, data_dir=args.data_dir,
        web_enabled=not args.no_web, web_host=args.web_host, web_port=args.web_port, web_bind=args.web_bind,
        lateness_s=args.lateness, replay_guard_s=args.replay_guard, rocksdb_cache_mb=args.rocksdb_cache_mb,
        batch_size=args.batch_size, fetch_partition_mb=args.fetch_partition_mb,
        fetch_min_kb=args.fetch_min_kb, fetch_wait_ms=args.fetch_wait_ms,
        stop_after=args.stop_after, stop_timeout_s=args.stop_timeout, stall_timeout_s=args.stall_timeout,
        loglevel=args.loglevel,
        session_timeout_s=args.session_timeout, group_instance_id=args.group_instance_id or None,
    )


def _forget_unclean_tables(rt, settings):
    """RocksDB tables left by a worker that did not stop cleanly may hold writes whose changelog
    records (and outputs) never reached Kafka: after a SIGKILL the local state can be ahead of what
    was published, and the replayed events would then be dropped as duplicates. Such tables are
    removed, so faust rebuilds them from the changelog (which is never ahead of the outputs).
    Returns the marker to write after a clean stop."""
    if not settings.store.startswith("rocksdb"):
        return None
    import logging
    import shutil
    from pathlib import Path

    tabledir = Path(rt.app.conf.tabledir)  # faust makes the folder when the app is built: look inside
    marker = tabledir.parent / f"{settings.app_id}.clean-stop"
    if _holds_tables(tabledir) and not marker.exists():
        logging.getLogger("pipeline.worker").warning(
            "%s: the last worker did not stop cleanly; rebuilding the tables from their changelogs", tabledir)
        shutil.rmtree(tabledir)
    marker.unlink(missing_ok=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    return marker


def _holds_tables(tabledir) -> bool:
    """Whether a worker left table data here (a partition's database, ``<table>-<n>.db``): a new
    data dir has nothing to distrust, only the empty ``<table>-backups`` folders faust makes with
    the app."""
    return tabledir.is_dir() and any(entry.is_file() or any(entry.iterdir()) for entry in tabledir.iterdir())


def _quiet_collector() -> None:
    """The worker's objects live long (table caches, the watchdog's heaps, the views' sketches) and
    hold few reference cycles: refcounting frees nearly all its garbage. With Python's default
    thresholds the cyclic collector still ran a full collection about twice a second under load,
    each 50-250 ms with almost nothing to collect (measured with gc.callbacks in a bench run), and
    those pauses were the end-to-end p99. The objects made at start-up are frozen out of it, and a
    young collection runs every 50,000 allocations instead of 700, so that a batch's short-lived
    objects are gone before one and are not promoted to the old generation."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run(args: argparse.Namespace) -> int:
    # faust's pure-Python conductor and streams, the code the patches copy and were measured
    # with (the agent reads its channel through faust_patches.event_batches, not faust's iterator)
    os.environ.setdefault("NO_CYTHON", "1")
    from . import faust_patches, liveness, topics
    from .app import create_app

    settings = settings_from_args(args)
    schemas = registry.from_args(args)
    if schemas is not None:
        named = settings.topics
        registry.attach(schemas, {f"{named.operations}-value": "operation", f"{named.node_state}-value": "node_state",
                                  f"{named.alerts}-value": "alert"},
                        reads={f"{topic}-value": codec.NOTIFICATION for topic in named.sources})
    partitions = topics.ensure(settings.client_kwargs(), settings.topics, settings.partitions, settings.replication,
                               own=topics.faust_topics(settings.app_id))
    if settings.web_enabled:  # the views (pipeline.web) show what the agent reports, on the same app
        from pipeline import web

        rt = create_app(settings, partitions, web.observations(partitions))
        web.install(rt)
    else:
        rt = create_app(settings, partitions)
    clean_marker = _forget_unclean_tables(rt, settings)
    _quiet_collector()
    started = time.monotonic()
    worker = liveness.worker(rt)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    else:  # pragma: no cover - execute_from_commandline always raises SystemExit
        code = 0
    worker.stopped()
    elapsed = time.monotonic() - started
    if clean_marker is not None and code == 0 and not faust_patches.crashed(rt.app):
        clean_marker.touch()
    m = rt.metrics
    summary = {
        "events": m.events, "processed": m.processed, "duplicates": m.duplicates,
        "beyond_horizon": m.beyond_horizon, "undecodable": m.undecodable, "unkeyed": m.unkeyed,
        "outputs": dict(m.outputs), "alerts": dict(m.alerts), "replay_suppressed": m.replay_suppressed, "reread": m.reread,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(m.events / (m.last_at - m.first_at)) if m.last_at > m.first_at else None,
        # the whole process (fetch, agent, producer, web), from the first batch to the last
        "cpu_us_per_event": round((m.cpu_last - m.cpu_first) / m.events * 1e6, 1) if m.events else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(orjson.dumps(summary).decode(), file=sys.stderr, flush=True)
    return code
