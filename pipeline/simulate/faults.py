"""Faults applied to the notification stream, each recorded in the operation's ground truth.

* loss: a fraction of terminal events (`.end` / `.error`, Glance `image.upload` / `task.success` /
  `task.failure`) is never sent; that operation's expected conclusion becomes missing_end.
* duplicates: a fraction of all events is sent twice with the same message_id, as a publisher
  retry does (oslo's rabbit driver re-publishes the same message after a recoverable error).
* reorder: each event is held back by 0..window positions, so events within the window swap.

The closing sweep's operations (`Operation.exempt`) are never touched: they exist to move event
time past every deadline, and losing one would leave a missing end that the truth does not know.
"""
from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .model import TERMINAL, Event

__all__ = ["Faults"]


@dataclass
class Faults:
    loss: float = 0.0
    duplicates: float = 0.0
    reorder: int = 0
    seed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"dropped": 0, "duplicated": 0, "delayed": 0})

    def __post_init__(self) -> None:
        for name in ("loss", "duplicates"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name} must be a fraction between 0 and 1, not {value}")
        if self.reorder < 0:
            raise ValueError(f"--reorder must be a window of 0 or more events, not {self.reorder}")
        self._rng = random.Random(self.seed ^ 0xFA17)

    def apply(self, events: Iterable[Event]) -> Iterator[Event]:
        rng, window = self._rng, self.reorder
        held: list[tuple[int, int, Event]] = []  # (release position, arrival order, event)
        order = 0
        position = -1
        for position, event in enumerate(events):
            op = event.op
            exempt = op is not None and op.exempt
            if not exempt and op is not None and event.role in TERMINAL and rng.random() < self.loss:
                op.end_dropped = True
                self.counts["dropped"] += 1
                continue
            copies = 2 if not exempt and self.duplicates and rng.random() < self.duplicates else 1
            if copies == 2:
                self.counts["duplicated"] += 1
                if op is not None:
                    op.duplicated = True
                    if event.role in TERMINAL:
                        op.end_duplicated = True
            for _ in range(copies):
                delay = rng.randint(0, window) if window and not exempt else 0
                if delay and op is not None and event.role in TERMINAL:
                    op.end_delayed = True
                self.counts["delayed"] += delay > 0
                heapq.heappush(held, (position + delay, order, event))
                order += 1
            while held and held[0][0] <= position:
                yield heapq.heappop(held)[2]
        while held:
            yield heapq.heappop(held)[2]
