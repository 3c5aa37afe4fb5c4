"""The worker holds faust's fetcher still while faust seeks the relay partitions back to their
committed offsets at the end of a recovery (agents._hold_flow_for_seek), and why it must."""
from __future__ import annotations

import asyncio

import pytest


async def test_end_of_recovery_stops_the_fetcher_until_faust_resumes_it(rt) -> None:
    app = rt.app
    consumer = app.consumer
    # during the changelog read faust runs with the flow active (recovery.py: "Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()

    # the signal faust sends first thing in on_recovery_completed, before its seek to committed
    await app.on_rebalance_complete.send()

    assert not consumer.flow_active and not app.flow_control.is_active()
    # the fetcher waits instead of asking aiokafka for records (nothing is delivered to the agent)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(consumer._wait_next_records(0.01), 0.2)

    # what faust does right after the seek
    app.flow_control.resume()
    consumer.resume_flow()
    assert consumer.flow_active and app.flow_control.is_active()


def test_faust_commits_one_offset_at_a_time_once_an_offset_is_acked_twice(rt) -> None:
    """The failure the hold prevents (faust 0.15.3, Consumer._new_offset): a range registered as a
    gap and also read and acked lands twice in the acked list, and the committable run stops at the
    first duplicate. If this test fails, faust changed here and the hold may no longer be needed."""
    from faust.types import TP

    consumer = rt.app.consumer
    tp = TP("t", 0)
    consumer._committed_offset[tp] = 100
    consumer._acked[tp] = list(range(100, 110))
    consumer._acked_index[tp] = set(range(100, 110))
    consumer._gap[tp].addi(101, 110)  # what _drain_messages records after the seek moved _read_offset back
    assert consumer._new_offset(tp) == 102  # not 110: ten records read, two committable


class FakeConsumerThread:
    """Stands in for faust's aiokafka thread: what the group committed, where seeks went."""

    def __init__(self, committed: dict) -> None:
        self.committed = committed
        self.seeks: list = []

    def assignment(self) -> set:
        return set(self.committed)

    async def seek_to_committed(self) -> dict:
        return dict(self.committed)

    def seek(self, tp, offset: int) -> None:
        self.seeks.append((tp.topic, tp.partition, offset))


async def test_the_seek_to_committed_also_rewinds_relay_partitions_never_committed(rt) -> None:
    from faust.types import TP

    app = rt.app
    relay = rt.topic_names.sources[0]
    done, fresh, changelog = TP(relay, 0), TP(relay, 1), TP(rt.resources.changelog_topic.get_topic_name(), 1)
    thread = FakeConsumerThread({done: 120, fresh: None, changelog: None})
    app.consumer._thread = thread
    await app.on_rebalance_complete.send()  # installs the rewind before faust's own seek

    await app.consumer.perform_seek()

    assert app.consumer._read_offset[done] == 120  # faust's seek, unchanged
    # aiokafka would have left it where its fetcher was; offset 0 is its beginning, or out of range
    # once retention removed it, and then auto_offset_reset=earliest moves it to the first offset
    assert thread.seeks == [(relay, 1, 0)]
    assert app.consumer._read_offset.get(fresh) is None
