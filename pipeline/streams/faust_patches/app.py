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


def fetch_in_rounds(min_bytes: int, max_wait_ms: int) -> Callable[[Any], None]:
    """A consumer patch: the broker answers the worker's fetches once `min_bytes` are there or
    `max_wait_ms` have passed, not as soon as one record is.

    Symptom: faust creates its aiokafka consumer with aiokafka's fetch_min_bytes=1 and has no setting
    for it (`AIOKafkaConsumerThread._create_worker_consumer`, faust/transport/drivers/aiokafka.py
    568-630), so under a trickle every fetch of the relay partitions comes back with a record or two
    and the next one goes out at once: encoding and decoding a request and a response for every
    partition, a wake of the event loop, and the broker's work for each. At 300 events/s the worker
    used 0.50 of a core (1.7 ms per record, against 0.18 ms under a backlog) and the broker 0.36;
    with 64 KB or 50 ms, 0.18 and 0.24. A backlog is unchanged: its fetches fill at once. On by
    default since the targets became CPU per event at a fleet's rates (64 KB or 40 ms; at 1,000/s
    it saved a quarter of the worker's CPU for about 25 ms more p50, docs/performance.md).
    Can go: if faust gains a fetch_min_bytes setting (none as of 0.15.3, no issue filed); it sets
    the attributes aiokafka's `AIOKafkaConsumer.start` hands to its fetcher, so re-check that
    method on every aiokafka upgrade (`PATCHED_SOURCES`).
    """

    def patch(consumer: Any) -> None:
        thread = consumer._thread
        create = thread._create_worker_consumer

        def create_worker_consumer(transport: Any) -> Any:
            kafka = create(transport)
            kafka._fetch_min_bytes = min_bytes
            kafka._fetch_max_wait_ms = max_wait_ms
            return kafka

        thread._create_worker_consumer = create_worker_consumer

    return patch


def crashed(app: Any) -> bool:
    """Whether faust stopped the app because of an error (mode's `Service._crashed`).

    Why: `Worker.execute_from_commandline` exits 0 after a crash too, and a RocksDB table left by a
    crashed worker must be rebuilt from its changelog (command.py); mode has no public flag for it.
    Can go: if mode exposes one.
    """
    return app._crashed.is_set()
