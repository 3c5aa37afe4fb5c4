"""The app and its consumer: patches put on the consumer faust creates, and the worker's exit."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def patch_new_consumers(app: Any, *patches: Callable[[Any], None]) -> None:
    """Apply `patches` to the consumer as soon as faust creates it (`App._new_consumer`).

    Why: faust's fetcher looks `Consumer._drain_messages` up when the drain loop starts, so an
    override must be on the consumer before that; the end-of-rebalance signal comes too late and
    creating `app.consumer` early binds it before the worker's event loop is set up.
    Can go: with the patches it applies.
    """
    original = app._new_consumer

    def new_consumer() -> Any:
        consumer = original()
        for patch in patches:
            patch(consumer)
        return consumer

    app._new_consumer = new_consumer


def crashed(app: Any) -> bool:
    """Whether faust stopped the app because of an error (mode's `Service._crashed`).

    Why: `Worker.execute_from_commandline` exits 0 after a crash too, and a RocksDB table left by a
    crashed worker must be rebuilt from its changelog (command.py); mode has no public flag for it.
    Can go: if mode exposes one.
    """
    return app._crashed.is_set()
