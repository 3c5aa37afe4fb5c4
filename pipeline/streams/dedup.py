"""Dedup by message_id, bounded per resource in time and in count.

Duplicates of a message carry the same key (the resource UUID), so they land in the same partition
and the same state record: the recent ids live in that record (`d`, pairs of a 63-bit hash of the
id and its event time) and are changelogged with it, so the memory survives restarts. An id is
forgotten once it is older than the window (event time, relative to the newest event of the
resource) or pushed out by `max_ids` newer ones; the event time of the newest forgotten id is the
horizon (`dh`). A message at or below the horizon that is not remembered may be a duplicate we can
no longer tell apart: it is counted ("beyond_horizon") and not processed.
"""
from __future__ import annotations

from hashlib import blake2b
from operator import itemgetter

from .models import ResourceState

__all__ = ["check", "id_hash", "remember"]

_MASK = (1 << 63) - 1
_TIME = itemgetter(1)  # of an entry [id hash, event time]


def id_hash(message_id: str) -> int:
    return int.from_bytes(blake2b(message_id.encode(), digest_size=8).digest(), "little") & _MASK


def check(state: ResourceState, h: int, ts: int) -> str:
    """"new", "duplicate" or "beyond_horizon" for a message with id hash `h` at event time `ts`."""
    for seen, _ in state["d"]:
        if seen == h:
            return "duplicate"
    if state["dh"] and ts <= state["dh"]:
        return "beyond_horizon"
    return "new"


def remember(state: ResourceState, h: int, ts: int, window_us: int, max_ids: int) -> None:
    """Add the id; forget ids out of the window or over the count (mutates `state`)."""
    seen = state["d"]
    seen.append([h, ts])
    times = list(map(_TIME, seen))
    oldest_kept = max(times) - window_us
    horizon = state["dh"]
    if min(times) < oldest_kept:  # some fall out of the window
        keep = []
        for entry in seen:
            if entry[1] < oldest_kept:
                horizon = max(horizon, entry[1])
            else:
                keep.append(entry)
    else:
        keep = seen
    if len(keep) > max_ids:
        keep.sort(key=_TIME)  # forget the oldest: keeps the horizon low
        while len(keep) > max_ids:
            horizon = max(horizon, keep.pop(0)[1])
    state["d"] = keep
    state["dh"] = horizon
