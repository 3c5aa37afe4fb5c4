"""5. The producer: direct sends, and the changelog released before faust's commit."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def aiokafka_producer(app: Any) -> Any:
    """The aiokafka producer under faust's `app.producer` (the one faust flushes on commit).

    Why: faust's `send_soon` path (ProducerBuffer) drains one record per event-loop turn and topped
    out near 2,500 records/s here; the worker sends its outputs and changelog records on the same
    aiokafka producer directly, so faust's commit-time flush still covers them.
    Can go: if faust's buffer gets batch sends.
    """
    return app.producer._ensure_producer()


def flush_first(producer: Any, before: Callable[[], Awaitable[None]]) -> None:
    """Run `before` at the start of every `producer.flush()` faust calls (commit and shutdown).

    Why: faust's commit flushes the producer and then commits the acked offsets
    (faust/transport/consumer.py:1097-1151); the worker holds each changelog record until the
    outputs of its events are acknowledged, and those held records must reach the producer before
    that flush, or a committed offset would not mean "state and outputs are in Kafka". faust has no
    hook there. Can go: if faust gets a pre-commit hook.
    """
    original = producer.flush

    async def flush() -> None:
        await before()
        await original()

    producer.flush = flush
