"""5. The producer: direct sends, the changelog released before faust's commit, and 10. the
metadata of every topic it sends to."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
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


async def track_every_topic(producer: Any, topics: Iterable[str]) -> None:
    """Keep the producer's metadata of every topic it sends to, not only of the last ones it met.

    Symptom (a fresh worker, 1 start in 10 under load; tests/faults/test_fresh_starts.py): the
    agent published a node's first record and never the next one, burnt a core, and ignored
    SIGTERM. aiokafka's client asks the cluster for every topic while its own topic set is empty,
    and for that set only once it is not (`AIOKafkaClient._metadata_update`); `_wait_on_metadata`
    adds a topic to the set only when the cluster metadata does not know it yet. The worker's first
    sends go to topics the first full answer knew (outputs, one changelog), untracked; a later
    send to a topic that answer missed (a changelog created a moment before) makes it the only
    tracked one, and the next refresh drops every other topic from the metadata: their batches wait
    for a leader that never comes back (faust's producer gives a batch 20 minutes), the sender
    asks for metadata again in a tight loop (the busy core), a later batch of the same partition
    waits behind the stuck one (`add_batch`), and faust's commit and clean stop wait for the
    producer to flush (SIGTERM seemed ignored).
    Here every topic the worker produces to is tracked before the first record flows, and any
    other one is tracked as it is first sent to. Upstream: aiokafka 0.14.0, no issue filed.
    Can go: when `_wait_on_metadata` tracks every topic it is asked for; re-check on every aiokafka
    upgrade (`PATCHED_SOURCES`).
    """
    client = producer.client  # aiokafka's producer (`aiokafka_producer`)
    if not getattr(client, "_pipeline_tracks_every_topic", False):
        original = client._wait_on_metadata

        async def wait_on_metadata(topic: str) -> Any:
            if topic not in client._topics:
                client.add_topic(topic)  # the next update (forced by this) covers the whole set
            return await original(topic)

        client._wait_on_metadata = wait_on_metadata
        client._pipeline_tracks_every_topic = True
    await client.set_topics(set(client._topics) | set(topics))
