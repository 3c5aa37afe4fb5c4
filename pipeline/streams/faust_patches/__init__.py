"""Every place the worker reaches into faust-streaming's or aiokafka's private internals.

Written against faust-streaming 0.15.3 and aiokafka 0.14.0 exactly (pyproject.toml pins them).
Each patch is one named function or class whose docstring says what goes wrong without it, where
upstream stands, and when it can go; one module per patched area:

* `app`: patches put on the consumer faust creates (`patch_new_consumers`), the worker's exit;
* `drain`: 1. the drain loop runs the callback inline;
* `monitor`: 2. a lean monitor;
* `offsets`: 3. the end-of-recovery seek, 4. acked offsets that cannot be committed;
* `producer`: 5. direct sends, and the changelog released before faust's commit;
* `stores`: 6. table stores by partition;
* `decode`: 7. the relay topics' records handed on as the bytes they are;
* `stream`: 8. the stream read a batch at a time;
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
from .decode import raw_bytes_schema
from .drain import use_inline_drain
from .monitor import _lean_monitor_class, install_lean_monitor
from .offsets import hold_flow_for_seek, repair_acked_offsets, rewind_uncommitted_on_seek
from .pins import AIOKAFKA_VERSION, FAUST_VERSION, PATCHED_SOURCES, REQUIRED, missing, source_drift
from .producer import aiokafka_producer, flush_first
from .stores import PartitionStore
from .stream import event_batches

__all__ = [
    "AIOKAFKA_VERSION",
    "FAUST_VERSION",
    "PATCHED_SOURCES",
    "REQUIRED",
    "LeanMonitor",  # noqa: F822 - made on first use by the module's __getattr__
    "PartitionStore",
    "aiokafka_producer",
    "apply",
    "crashed",
    "event_batches",
    "flush_first",
    "hold_flow_for_seek",
    "install_lean_monitor",
    "missing",
    "patch_new_consumers",
    "raw_bytes_schema",
    "repair_acked_offsets",
    "rewind_uncommitted_on_seek",
    "source_drift",
    "use_inline_drain",
]


def apply(app: Any, sources: Collection[str]) -> None:
    """The consumer patches, on the consumer faust will create: the inline drain, and the seek
    that rewinds relay partitions (`sources`) without a committed offset."""
    patch_new_consumers(app, use_inline_drain, lambda consumer: rewind_uncommitted_on_seek(consumer, sources))


def __getattr__(name: str) -> Any:  # LeanMonitor without importing faust's sensors at import time
    if name == "LeanMonitor":
        return _lean_monitor_class()
    raise AttributeError(name)
