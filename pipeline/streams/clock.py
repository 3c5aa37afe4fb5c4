"""The lane clock: event time, and the bridges' heartbeats where events are quiet (no faust, no I/O).

A lane is one partition of one relay topic. Its watermark is the time before which nothing more
is expected on it, minus the allowed lateness; deadlines due before the watermark fire.

Two things move it, and the watermark is the larger (it never goes back):

* **event time**: the newest notification timestamp read on the lane;
* **the bridges' heartbeats** (pipeline/bridge/heartbeat.py): a heartbeat on a lane says "every
  notification I was handed before T is ahead of me on this lane". With several bridge replicas
  each vouches only for its own deliveries, so the lane's heartbeat time is the *smallest* T among
  the bridges that are alive on the lane.

A bridge is alive on a lane while its newest heartbeat there is at most `MISSES` of its intervals
older (by the bridges' `sent_at`) than the newest heartbeat of any bridge on that lane. So a replica
that stopped for good drops out after a few intervals and no longer holds the lane; a replica that
is alive but behind keeps writing heartbeats that repeat its old time, and holds it; when every
bridge is silent (stopped, cut off from Kafka) nobody is newer than anybody, and the lane holds.
Everything is decided in the lane's own record order, so a lane read late (a replay, a restart)
decides as it would have live.

After the clock is created (a worker start, a rebalance), a lane's heartbeats count only once they
span `MISSES` intervals: by then every bridge alive on the lane has written there at least once, so
the first replica read cannot move the lane past one not read yet.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import micros

__all__ = ["MISSES", "LaneClocks", "heartbeat_of"]

Lane = Hashable  # (topic, partition) in the worker

MISSES = 3  # heartbeat intervals a bridge may miss on a lane before it no longer holds the lane


def heartbeat_of(event: Mapping[str, Any], vouched: int) -> tuple[str, int, int, int]:
    """(bridge, vouched µs, sent µs, interval µs) of a heartbeat record (docs/contracts.md,
    Heartbeats) whose event time is `vouched`; ValueError when it is not one the bridge writes."""
    payload: Any = event.get("payload")  # anything: a record that is not a heartbeat is refused below
    try:
        bridge, sent, interval = payload["bridge"], payload["sent_at"], float(payload["interval_s"])
        if not isinstance(bridge, str) or not bridge or interval <= 0:
            raise ValueError
        return bridge, vouched, micros(sent), int(interval * 1_000_000)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"not a heartbeat the bridge writes: payload {str(payload)[:200]}") from None


@dataclass(slots=True)
class _Bridge:
    vouched: int  # µs: the newest time this bridge vouched for on the lane
    sent: int  # µs: its clock when it wrote its newest heartbeat on the lane
    interval: int  # µs


@dataclass(slots=True)
class _Lane:
    newest_event: int = 0  # µs
    mark: int = 0  # µs: the watermark, never lowered
    first_sent: int | None = None  # the first heartbeat read since the clock was created
    newest_sent: int = 0
    bridges: dict[str, _Bridge] = field(default_factory=dict)


class LaneClocks:
    def __init__(self, lateness_us: int) -> None:
        self.lateness_us = lateness_us
        self.lanes: dict[Lane, _Lane] = {}

    def _lane(self, lane: Lane) -> _Lane:
        state = self.lanes.get(lane)
        if state is None:
            state = self.lanes[lane] = _Lane()
        return state

    def watermark(self, lane: Lane) -> int:
        state = self.lanes.get(lane)
        return 0 if state is None else state.mark

    def observe(self, lane: Lane, ts: int) -> int:
        """A notification of event time `ts` was read on `lane`; returns the lane's watermark."""
        state = self._lane(lane)
        if ts > state.newest_event:
            state.newest_event = ts
            if ts - self.lateness_us > state.mark:
                state.mark = ts - self.lateness_us
        return state.mark

    def restore(self, lane: Lane, watermark: int) -> None:
        """Raise the lane's watermark to one recorded in the table (after a restart or rebalance)."""
        state = self._lane(lane)
        if watermark > state.mark:
            state.mark = watermark

    def heartbeat(self, lane: Lane, bridge: str, vouched: int, sent: int, interval: int) -> int:
        """A heartbeat of `bridge` was read on `lane`; returns the lane's watermark."""
        state = self._lane(lane)
        known = state.bridges.get(bridge)
        if known is None:
            state.bridges[bridge] = _Bridge(vouched, sent, interval)
        else:
            known.vouched = max(known.vouched, vouched)
            known.sent = max(known.sent, sent)
            known.interval = interval
        if state.first_sent is None:
            state.first_sent = sent
        state.newest_sent = max(state.newest_sent, sent)
        vouched_by_all = self._vouched(state)
        if vouched_by_all is not None and vouched_by_all - self.lateness_us > state.mark:
            state.mark = vouched_by_all - self.lateness_us
        return state.mark

    def _vouched(self, state: _Lane) -> int | None:
        """The smallest vouched time among the bridges alive on the lane (None: not known yet)."""
        newest = state.newest_sent
        for name in [n for n, b in state.bridges.items() if newest - b.sent > MISSES * b.interval]:
            del state.bridges[name]  # gone: it no longer holds the lane (and is forgotten)
        span = max(b.interval for b in state.bridges.values()) * MISSES
        if state.first_sent is None or newest - state.first_sent < span:
            return None
        return min(b.vouched for b in state.bridges.values())

    def bridges(self, lane: Lane) -> dict[str, int]:
        """Bridge -> the time it vouches for on `lane`, for the bridges alive there."""
        state = self.lanes.get(lane)
        return {} if state is None else {n: b.vouched for n, b in state.bridges.items()}

    def clear(self) -> None:
        self.lanes.clear()
