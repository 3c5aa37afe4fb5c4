"""Every place the worker reaches into faust-streaming's or aiokafka's private internals.

Written against faust-streaming 0.15.3 and aiokafka 0.14.0 exactly (pyproject.toml pins them).
Each patch is one named function or class whose docstring says what goes wrong without it, where
upstream stands, and when it can go; one module per patched area:

* `app`: patches put on the consumer faust creates (`patch_new_consumers`), the worker's exit;
* `fetch`: 9. fetches answered in rounds, 12. their min bytes paced by the traffic;
* `drain`: 1. the drain loop runs the callback inline;
* `monitor`: 2. a lean monitor;
* `offsets`: 3. the end-of-recovery seek, 4. acked offsets that cannot be committed;
* `producer`: 5. direct sends, and the changelog released before faust's commit, 10. the metadata
  of every topic the producer sends to;
* `stores`: 6. table stores by partition, 15. one memory budget for all their databases;
* `decode`: 7. the relay topics' records handed on as the bytes they are;
* `stream`: 8. the stream read a batch at a time;
* `recovery`: 10. the tables restored from their changelogs in bulk;
* `tables`: 11. the tables started without faust's one-second wait;
* `commits`: 13. the commit's log table drawn only when logged, 14. its assignment read once;
* `pins`: `REQUIRED` lists every private name the patches touch, and `PATCHED_SOURCES` the hash of
  each faust method a patch copies; tests/unit/test_faust_patches.py fails when an upgrade
  removes, renames or rewrites one of them.

`apply` installs what goes on the consumer; the others are called where they act. Nothing outside
this package may use a private faust or aiokafka name.
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .app import crashed, patch_new_consumers
from .commits import commit_against_one_assignment, commit_log_on_demand
from .decode import raw_bytes_schema
from .drain import use_inline_drain
from .fetch import FetchPacer, fetch_in_rounds, pace_fetches
from .monitor import _lean_monitor_class, install_lean_monitor
from .offsets import hold_flow_for_seek, repair_acked_offsets, rewind_uncommitted_on_seek
from .pins import AIOKAFKA_VERSION, FAUST_VERSION, PATCHED_SOURCES, REQUIRED, missing, source_drift
from .producer import aiokafka_producer, flush_first, track_every_topic
from .recovery import BulkRestore, restore_in_bulk, restored_by
from .stores import PartitionStore, RocksDBMemory
from .stream import event_batches
from .tables import start_tables_at_once

__all__ = [
    "AIOKAFKA_VERSION",
    "BulkRestore",
    "FAUST_VERSION",
    "FetchPacer",
    "PATCHED_SOURCES",
    "REQUIRED",
    "LeanMonitor",  # noqa: F822 - made on first use by the module's __getattr__
    "PartitionStore",
    "RocksDBMemory",
    "aiokafka_producer",
    "apply",
    "commit_against_one_assignment",
    "commit_log_on_demand",
    "crashed",
    "event_batches",
    "fetch_in_rounds",
    "flush_first",
    "hold_flow_for_seek",
    "install_lean_monitor",
    "missing",
    "pace_fetches",
    "patch_new_consumers",
    "raw_bytes_schema",
    "repair_acked_offsets",
    "restore_in_bulk",
    "restored_by",
    "rewind_uncommitted_on_seek",
    "source_drift",
    "start_tables_at_once",
    "track_every_topic",
    "use_inline_drain",
]


def apply(app: Any, sources: Collection[str], fetch_min_bytes: int = 0, fetch_wait_ms: int = 0,
          fetch_round_ms: int = 0) -> None:
    """The consumer patches, on the consumer faust will create: the inline drain, the seek that
    rewinds relay partitions (`sources`) without a committed offset, the commit that reads the
    assignment once, and, with `fetch_min_bytes`,
    fetches answered in rounds (0: faust's, as soon as one record is there), with `fetch_round_ms`
    their min bytes following the traffic from that floor up."""
    rounds = (fetch_in_rounds(fetch_min_bytes, fetch_wait_ms, fetch_round_ms),) if fetch_min_bytes > 0 else ()
    patch_new_consumers(app, use_inline_drain, lambda consumer: rewind_uncommitted_on_seek(consumer, sources),
                        commit_against_one_assignment, *rounds)


def __getattr__(name: str) -> Any:  # LeanMonitor without importing faust's sensors at import time
    if name == "LeanMonitor":
        return _lean_monitor_class()
    raise AttributeError(name)
