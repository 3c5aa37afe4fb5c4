"""`pipeline worker`: the stream agents and their web views, as one faust worker process."""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time

import orjson

from .. import codec, registry
from ..config import add_settings
from .settings import SETTINGS, settings_from_args

__all__ = ["configure", "run", "settings_from_args"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, SETTINGS)


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
