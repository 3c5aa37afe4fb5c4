"""`pipeline worker`: the stream agents and their web views, as one faust worker process."""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import time

import orjson

from .. import catalog
from ..config import ConfigError, add_kafka_args, add_value_format_arg, env, env_float, env_int, kafka_client_kwargs
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


def configure(parser: argparse.ArgumentParser) -> None:
    add_kafka_args(parser)
    add_value_format_arg(parser)
    g = parser.add_argument_group("worker")
    g.add_argument("--app-id", default=env("WORKER_APP_ID", "pipeline-worker"),
                   help="faust app id: consumer group and table changelog prefix (env WORKER_APP_ID; default %(default)s)")
    g.add_argument("--output-prefix", default=env("OUTPUT_TOPIC_PREFIX", "pipeline."),
                   help="prefix of the output topics operations, node-state, alerts (env OUTPUT_TOPIC_PREFIX; default %(default)s)")
    g.add_argument("--replication", type=int, default=env_int("TOPIC_REPLICATION_FACTOR", 1),
                   help="replication factor of topics the worker creates (env TOPIC_REPLICATION_FACTOR; default %(default)s)")
    g.add_argument("--store", default=env("WORKER_STORE", "rocksdb://"),
                   help="table store: rocksdb:// (production) or memory:// (tests) (env WORKER_STORE; default %(default)s)")
    g.add_argument("--data-dir", default=env("WORKER_DATA_DIR", ".worker-data"),
                   help="directory of the RocksDB tables (env WORKER_DATA_DIR; default %(default)s)")
    g.add_argument("--rocksdb-cache-mb", type=int, default=env_int("WORKER_ROCKSDB_CACHE_MB", 64),
                   help="RocksDB block cache per table partition, MiB (env WORKER_ROCKSDB_CACHE_MB; default %(default)s)")
    g.add_argument("--session-timeout", type=float, default=env_float("WORKER_SESSION_TIMEOUT", 30.0),
                   help="a worker that died without leaving its group is replaced after this, s "
                        "(env WORKER_SESSION_TIMEOUT; default %(default)s)")
    g.add_argument("--group-instance-id", default=env("WORKER_GROUP_INSTANCE_ID"),
                   help="static group membership (e.g. the StatefulSet pod name): a restarted worker takes "
                        "its partitions back at once, without waiting for the session timeout "
                        "(env WORKER_GROUP_INSTANCE_ID; default none)")
    g.add_argument("--web-host", default=env("WORKER_WEB_HOST", "127.0.0.1"),
                   help="host name other workers reach this one's web views at (env WORKER_WEB_HOST; default %(default)s)")
    g.add_argument("--web-port", type=int, default=env_int("WORKER_WEB_PORT", 6066),
                   help="web views port (env WORKER_WEB_PORT; default %(default)s)")
    g.add_argument("--web-bind", default=env("WORKER_WEB_BIND", "127.0.0.1"),
                   help="address the web server binds (env WORKER_WEB_BIND; default %(default)s)")
    g.add_argument("--no-web", action="store_true", default=env("WORKER_WEB_ENABLED", "1") == "0",
                   help="no web server (env WORKER_WEB_ENABLED=0)")
    t = parser.add_argument_group("watchdog (event time)")
    t.add_argument("--deadline", action="append", default=[env("DEADLINES", "")], metavar="OPERATION=SECONDS",
                   help="deadline of an operation's end, overriding the catalog's; repeatable "
                        "(env DEADLINES, comma-separated)")
    t.add_argument("--default-deadline", type=float, default=env_float("DEFAULT_DEADLINE", catalog.DEFAULT_DEADLINE_S),
                   help="deadline of operations the catalog has none for, s (env DEFAULT_DEADLINE; default %(default)s)")
    t.add_argument("--stuck-after", type=float, default=env_float("STUCK_AFTER", 3600.0),
                   help="a node in a transitional provision state longer than this raises stuck_state, s "
                        "(env STUCK_AFTER; default %(default)s)")
    t.add_argument("--orphan-grace", type=float, default=env_float("ORPHAN_GRACE", 300.0),
                   help="how long an end waits for its start before orphan_end, s (env ORPHAN_GRACE; default %(default)s)")
    t.add_argument("--lateness", type=float, default=env_float("WATERMARK_LATENESS", 60.0),
                   help="the watermark trails the newest event time of a partition by this, s "
                        "(env WATERMARK_LATENESS; default %(default)s)")
    t.add_argument("--late-horizon", type=float, default=env_float("LATE_HORIZON", 86400.0),
                   help="after missing_end, how long a late end is still paired, s (env LATE_HORIZON; default %(default)s)")
    t.add_argument("--dedup-window", type=float, default=env_float("DEDUP_WINDOW", 3600.0),
                   help="message ids remembered per resource, s of event time (env DEDUP_WINDOW; default %(default)s)")
    t.add_argument("--dedup-max-ids", type=int, default=env_int("DEDUP_MAX_IDS", 32),
                   help="... and at most this many per resource (env DEDUP_MAX_IDS; default %(default)s)")
    t.add_argument("--replay-guard", type=float, default=env_float("REPLAY_GUARD", 30.0),
                   help="on assignment, re-read this much (s before the newest record) of each output partition "
                        "so a replay does not publish twice; 0 = off (env REPLAY_GUARD; default %(default)s)")
    t.add_argument("--batch-size", type=int, default=env_int("WORKER_BATCH_SIZE", 1000),
                   help="relay records the agent folds in one batch, at most (a batch is what the stream has "
                        "buffered): each resource's state is read and written once per batch "
                        "(env WORKER_BATCH_SIZE; default %(default)s)")
    b = parser.add_argument_group("benchmarks")
    b.add_argument("--stop-after", type=int, default=env_int("WORKER_STOP_AFTER", 0),
                   help="exit after reading this many relay records and print a JSON summary (0 = never)")
    b.add_argument("--loglevel", default=env("WORKER_LOGLEVEL", "warning"),
                   choices=("debug", "info", "warning", "error"), help="(env WORKER_LOGLEVEL; default %(default)s)")


def settings_from_args(args: argparse.Namespace):
    from .app import WorkerSettings

    deadlines = dict(catalog.OPERATIONS)
    deadlines.update(parse_deadlines([d for d in args.deadline if d]))
    for name, value in (("--stuck-after", args.stuck_after), ("--orphan-grace", args.orphan_grace),
                        ("--late-horizon", args.late_horizon), ("--dedup-window", args.dedup_window),
                        ("--default-deadline", args.default_deadline)):
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, not {value:g}")
    if not 6 <= args.session_timeout <= 300:
        raise ConfigError(f"--session-timeout must be between 6 and 300 s, not {args.session_timeout:g}")
    if args.lateness < 0:
        raise ConfigError(f"--lateness must be >= 0, not {args.lateness:g}")
    if args.dedup_max_ids < 1:
        raise ConfigError("--dedup-max-ids must be >= 1")
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
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
        replication=args.replication, value_format=args.value_format, store=args.store, data_dir=args.data_dir,
        web_enabled=not args.no_web, web_host=args.web_host, web_port=args.web_port, web_bind=args.web_bind,
        lateness_s=args.lateness, replay_guard_s=args.replay_guard, rocksdb_cache_mb=args.rocksdb_cache_mb,
        batch_size=args.batch_size,
        stop_after=args.stop_after, loglevel=args.loglevel,
        session_timeout_s=args.session_timeout, group_instance_id=args.group_instance_id or None,
    )


def _install_web(rt) -> None:
    """The web views (pipeline.web, another module) register their pages on the same app."""
    if importlib.util.find_spec("pipeline.web") is None:
        return
    web = importlib.import_module("pipeline.web")
    install = getattr(web, "install", None)
    if install is not None:
        install(rt)


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

    tabledir = Path(rt.app.conf.tabledir)
    marker = tabledir.parent / f"{settings.app_id}.clean-stop"
    if tabledir.exists() and not marker.exists():
        logging.getLogger("pipeline.worker").warning(
            "%s: the last worker did not stop cleanly; rebuilding the tables from their changelogs", tabledir)
        shutil.rmtree(tabledir)
    marker.unlink(missing_ok=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    return marker


def run(args: argparse.Namespace) -> int:
    # faust's compiled stream iterator awaits the channel for every event even when values are
    # queued; the pure-Python one takes them directly (measured: about a third more events/s)
    os.environ.setdefault("NO_CYTHON", "1")
    import faust

    from . import faust_patches, topics
    from .app import create_app

    settings = settings_from_args(args)
    partitions = topics.ensure(settings.client_kwargs(), settings.topics, settings.partitions, settings.replication)
    rt = create_app(settings, partitions)
    if settings.web_enabled:
        _install_web(rt)
    clean_marker = _forget_unclean_tables(rt, settings)
    started = time.monotonic()
    worker = faust.Worker(rt.app, loglevel=settings.loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    else:  # pragma: no cover - execute_from_commandline always raises SystemExit
        code = 0
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
