"""What the stages share: their progress lines and the window a backlog's rate is measured over."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..procs import Proc

Say = Callable[[str], None]


class Ticker:
    """A progress line at most once a second."""

    def __init__(self, say: Say, label: str, total: int) -> None:
        self.say, self.label, self.total = say, label, total
        self.start = self.next = time.perf_counter()

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now >= self.next:
            self.next = now + 1.0
            rate = done / max(now - self.start, 1e-9)
            self.say(f"  {self.label}: {done:,}/{self.total:,} ({rate:,.0f}/s)")


@dataclass
class Window:
    """Progress samples of processes working through a backlog, from the first sample that saw a
    record to the last: their rate, and the CPU time they spent per record in between (steadier
    than a rate on a shared machine, and blind to start-up and idle time).

    A fast process may take the whole backlog between two samples: the window then starts at the
    last sample that saw no record, so its figures include at most one sampling interval before
    the first record instead of there being none; how fast the machine is decides only which."""

    before: tuple[float, int, float] | None = None  # the last sample that saw no record
    first: tuple[float, int, float] | None = None  # (time, records, CPU seconds)
    last: tuple[float, int, float] | None = None

    def add(self, now: float, records: int, cpu_seconds: float) -> None:
        if self.first is None and records <= 0:
            self.before = (now, records, cpu_seconds)
        if self.first is None and records > 0:
            self.first = (now, records, cpu_seconds)
        if self.first is not None:
            self.last = (now, records, cpu_seconds)

    @property
    def start(self) -> tuple[float, int, float] | None:
        if self.first and self.last and self.last[1] > self.first[1]:
            return self.first
        return self.before if self.last else None

    @property
    def records(self) -> int:
        return self.last[1] - self.start[1] if self.start and self.last else 0

    @property
    def rate(self) -> float:
        if self.start is None or self.last is None or not self.records:
            return float("nan")
        return self.records / max(self.last[0] - self.start[0], 1e-9)

    @property
    def cpu_us_per_event(self) -> float:
        if self.start is None or self.last is None or not self.records:
            return float("nan")
        return (self.last[2] - self.start[2]) / self.records * 1e6


def cpu_of(procs: Sequence[Proc]) -> float:
    """CPU seconds of `procs` together (a process that exited counts as nothing more)."""
    return sum(p.cpu_seconds() or 0.0 for p in procs)
