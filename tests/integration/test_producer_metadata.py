"""The producer keeps the metadata of every topic it sends to (faust_patches.track_every_topic).

aiokafka's client asks for every topic's metadata while it tracks none, and only for the tracked
ones after that; it tracks a topic only when a send meets it unknown. A send to a topic the first
answer knew, then one to a topic created later, left the first one out of every later refresh:
its next batch waited for a leader for faust's 20 minutes. This is what stalled fresh workers
(issue 28; tests/faults/test_fresh_starts.py)."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.streams import faust_patches
from tests.conftest import KAFKA

pytestmark = pytest.mark.integration


async def _create(name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        await admin.close()


async def _after_a_late_topic(patched: bool) -> tuple[set | None, bool, bool]:
    """Send to a known topic, then to one created afterwards, then refresh: is the first one
    still in the metadata, can a record still be sent to it within 10 s, and is it among the topics
    the client asks the cluster about?"""
    tag = uuid.uuid4().hex[:10]
    early, late = f"pmeta-{tag}-early", f"pmeta-{tag}-late"
    await _create(early)
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, request_timeout_ms=60_000)
    await producer.start()
    try:
        # the first answer: every topic, `early` too (a topic just created can be missing from the
        # broker's answer for a moment under load: then the send below would track it itself)
        for _ in range(100):
            await producer.client.force_metadata_update()
            if producer.client.cluster.partitions_for_topic(early):
                break
            await asyncio.sleep(0.1)
        if patched:
            await faust_patches.track_every_topic(producer, [])
        await producer.send_and_wait(early, b"1", partition=0)
        await _create(late)
        await producer.send_and_wait(late, b"2", partition=0)
        tracked = early in producer.client._topics  # what every later refresh asks for
        await producer.client.force_metadata_update()
        known = producer.client.cluster.partitions_for_topic(early)
        fut = await producer.send(early, b"3", partition=1) if known else None
        try:
            delivered = fut is not None and bool(await asyncio.wait_for(fut, 10))
        except TimeoutError:
            delivered = False
        return known, delivered, tracked
    finally:
        try:
            await asyncio.wait_for(producer.stop(), 15)  # a stuck batch would hold its flush
        except TimeoutError:
            pass


def test_a_late_topic_drops_the_others_from_aiokafkas_metadata() -> None:
    """The defect itself, so that this fails once aiokafka fixes it (then the patch can go): the
    first topic is not tracked, so refreshes leave it out. Whether the refresh right after has
    already dropped it is a race (an update under way when it is asked for answers it, and that
    one may still cover every topic: seen once under load in `make test`), so only the cause is
    asserted, not its timing."""
    _, _, tracked = asyncio.run(_after_a_late_topic(patched=False))
    assert not tracked


def test_with_the_patch_every_topic_stays_known_and_sendable() -> None:
    known, delivered, tracked = asyncio.run(_after_a_late_topic(patched=True))
    assert tracked and known == {0, 1} and delivered
