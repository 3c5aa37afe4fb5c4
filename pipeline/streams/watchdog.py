"""Event-time deadlines: a watermark and a heap of due checks per lane (no faust, no clock).

A lane is one partition of one relay topic, `(topic, partition)`. faust reads the co-partitioned
topics of an agent independently, so one topic's partition can be hours of event time ahead of the
same partition number of another (a sparse `notifications.task` read to its end while
`notifications.baremetal.node` is still being caught up): a clock shared by partition number would
expire operations whose ends are merely not read yet. Every resource lives in one topic (its
family's), so its operations, their ends and their lane's clock move together.

The watermark of a partition is the newest event time seen on it minus the allowed lateness: a
check due at T fires only when an event later than T + lateness has been read from the same
partition, i.e. when the data proves the awaited event had its chance to arrive. A backlog replayed
in seconds therefore raises nothing its own events answer, and a restart cannot raise a false alert:
time only moves with the events read.

Tables cannot be written from timers (faust needs the current event to pick the changelog
partition), so the checks run inline: the agent, after each event of partition p, pops the checks of
p whose due time is below p's watermark and applies them to their resource's state in the same
stream context (the resource is keyed to p, so the write goes to the right changelog partition).

The heaps live in memory; after a (re)assignment the agent rebuilds them from the table
(`operations.pending`), and each state record carries the watermark of its partition when written
(``w``), so the watermark is restored as well. Stale entries are harmless: every check is
re-validated against the current state (`operations.on_expiry`).
"""
from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Iterator

from .clock import LaneClocks
from .models import Expiry

__all__ = ["Lane", "Watchdog"]

Lane = Hashable  # (topic, partition) in the worker; tests may use a plain partition number


class Watchdog:
    def __init__(self, lateness_us: int) -> None:
        self.lateness_us = lateness_us
        self.clock = LaneClocks(lateness_us)  # event time and the bridges' heartbeats, per lane
        self._heaps: dict[Lane, list[tuple[int, int, bytes, Expiry]]] = {}
        self._seq = 0

    @property
    def newest(self) -> dict[Lane, int]:
        """Per lane, the newest notification time read (µs): what /metrics reports as event time."""
        return {lane: state.newest_event for lane, state in self.clock.lanes.items() if state.newest_event}

    def watermark(self, partition: Lane) -> int:
        return self.clock.watermark(partition)

    def observe(self, partition: Lane, ts: int) -> None:
        self.clock.observe(partition, ts)

    def heartbeat(self, partition: Lane, bridge: str, vouched: int, sent: int, interval: int) -> None:
        """A bridge's heartbeat read on the lane (pipeline/streams/clock.py)."""
        self.clock.heartbeat(partition, bridge, vouched, sent, interval)

    def restore(self, partition: Lane, watermark: int) -> None:
        """Raise the partition's watermark to one recorded in the table."""
        self.clock.restore(partition, watermark)

    def schedule(self, partition: Lane, key: bytes, expiries: Iterable[Expiry]) -> None:
        heap = self._heaps.setdefault(partition, [])
        for expiry in expiries:
            self._seq += 1
            heapq.heappush(heap, (expiry.due, self._seq, key, expiry))

    def due(self, partition: Lane) -> Iterator[tuple[bytes, Expiry]]:
        """Pop every check of `partition` due before its watermark, earliest first."""
        heap = self._heaps.get(partition)
        if not heap:
            return
        mark = self.watermark(partition)
        while heap and heap[0][0] < mark:
            _, _, key, expiry = heapq.heappop(heap)
            yield key, expiry

    def pending_count(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def clear(self) -> None:
        self.clock.clear()
        self._heaps.clear()
