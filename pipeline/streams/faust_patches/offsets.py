"""3. The end-of-recovery seek, and 4. acked offsets that cannot be committed (faust-streaming#596
and its kin)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

log = logging.getLogger("pipeline.worker")


async def hold_flow_for_seek(app: Any) -> None:
    """Stop the fetcher while faust seeks the relay partitions back to their committed offsets.

    faust sends this signal at the top of `Recovery.on_recovery_completed` (and of
    `_resume_streams`); that method then resumes the stream partitions and awaits
    `Consumer.perform_seek()` with the flow still active since the changelog read
    (faust/tables/recovery.py:451-452, then 649-656; flow resumed again only at 659-660).
    aiokafka's `seek_to_committed` asks the coordinator once per assigned partition
    (aiokafka/consumer/consumer.py:897-902), so meanwhile the fetcher hands the agent records it
    had prefetched and moves `_read_offset` ahead; `perform_seek` then moves it back
    (faust/transport/consumer.py:569), the next record looks like a jump, and `_drain_messages`
    records the range as a "gap" (consumer.py:1212-1215, 1164) although those offsets are read
    and acked (again). `_new_offset` merges the gap into the acked offsets without dropping what
    is already there (consumer.py:1127): the list holds offsets twice, `consecutive_numbers`
    ends its run at the first duplicate (consumer.py:1145), and each commit advances the
    partition by about one record. The agent has read everything, the group never catches up
    (seen after a SIGKILL: the restart has a changelog to recover and records to re-read, so the
    seek has a backlog to race). With the flow stopped here the fetcher delivers nothing
    between the resume and the seek; faust resumes the flow itself right after the seek. What
    a fetch already under way returns meanwhile faust discards, to be fetched again from the
    position the seek sets (`rewind_uncommitted_on_seek` makes that true for every partition).
    Upstream: faust-streaming 0.15.3, no issue filed. Can go: when faust stops the flow for its seek.
    """
    app.consumer.stop_flow()
    app.flow_control.suspend()
    await asyncio.sleep(0)  # let the drain loop see the suspension before the seek starts


def rewind_uncommitted_on_seek(consumer: Any, sources: Collection[str]) -> None:
    """Make faust's "seek to committed" also rewind relay partitions that have no committed offset.

    Symptom: faust discards what the fetcher returns while its flow is stopped (or for a partition
    it has just paused) and relies on `perform_seek` to fetch it again (faust/transport/
    consumer.py:766-772). aiokafka's `seek_to_committed` skips partitions without a committed
    offset (aiokafka/consumer/consumer.py:901), so for those the position stays past records nobody
    processed: they are never read and never committed, and the group's lag stays above zero (seen
    in tests/faults: a restart before the first commit of a small topic). Such a partition goes
    back to its beginning, where `auto_offset_reset=earliest` started it; what it re-reads is
    dropped by the dedup. The rewind is a seek to offset 0, which takes effect at once; where
    retention has removed offset 0 the broker answers "out of range" and `auto_offset_reset`
    moves the partition to its first offset. (aiokafka's `seek_to_beginning` waits for the fetch
    in flight to return before it resets, up to the fetch's max wait: 0.5 s of every start.)
    Upstream: the seek race is in faust-streaming 0.15.3, no issue filed.
    Can go: when faust re-fetches discarded records itself.
    """
    if getattr(consumer, "_pipeline_rewinds_uncommitted", False):
        return
    original = consumer.perform_seek

    async def perform_seek() -> None:
        await original()
        fresh = [tp for tp in consumer.assignment()
                 if tp.topic in sources and not consumer._read_offset.get(tp)]
        if fresh:
            log.info("%d relay partitions without a committed offset: read from their beginning", len(fresh))
            for tp in fresh:
                await consumer.seek(tp, 0)

    consumer.perform_seek = perform_seek
    consumer._pipeline_rewinds_uncommitted = True


def repair_acked_offsets(consumer: Any, sources: Collection[str], stalls: dict[Any, tuple[int, int]]) -> list[tuple[Any, int, int]]:
    """Keep faust's acked offsets committable; returns the (tp, committed, head) to read again.

    Symptom: faust commits, per partition, the first run of consecutive offsets in
    `Consumer._acked[tp]` that starts at the committed offset (`Consumer._new_offset`). Two states
    of that list stop the committed offset although the agent has read the records, and the group's
    lag then never reaches zero:

    * an offset listed twice: the run ends at the first duplicate, so each commit advances by about
      one record (left by the recovery-seek race the worker prevents by holding the flow; should it
      happen anyway the list is reduced to distinct offsets, as `Consumer.ack` keeps it with
      `_acked_index`, and a warning says so);
    * a hole at the head: faust marked records as read that never reached the agent, so they are
      never acked (faust-streaming#596, open in 0.15.3). A partition showing the same hole on two
      checks in a row is returned, to be read again from the committed offset.

    Can go: when #596 is fixed and `_new_offset` tolerates duplicates.
    """
    reread = []
    for tp, acked in list(getattr(consumer, "_acked", {}).items()):
        committed = consumer._committed_offset.get(tp)
        if not acked or committed is None or tp.topic not in sources:
            stalls.pop(tp, None)
            continue
        distinct = set(acked)
        if len(distinct) < len(acked):
            # no await between reading and rewriting: faust's commit (same loop) sees either
            log.warning("%s[%d]: %d acked offsets were listed twice, which lets faust commit one "
                        "record at a time; keeping each once", tp.topic, tp.partition, len(acked) - len(distinct))
            acked[:] = sorted(distinct)
            consumer._acked_index[tp].update(distinct)
        head = min(acked)
        if head <= committed:
            stalls.pop(tp, None)
            continue
        if stalls.get(tp) != (committed, head):
            stalls[tp] = (committed, head)
            continue
        stalls.pop(tp, None)
        reread.append((tp, committed, head))
    return reread
