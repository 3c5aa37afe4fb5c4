"""How long a process waits before trying a broker again: one rule for every retry loop (the
bridge's RabbitMQ and oslo Kafka reconnects, its producer's start and renewal, topic creation and
produce; the wait for the schema registry at start).

The delay doubles after each failure up to a ceiling, so a broker that is down for minutes costs a
log line and a connection attempt every 30 s, not a tight loop. Jitter spreads the bridges' replicas
(and the relay's concurrent retries) so that they do not all knock at the same instant when the
broker comes back.
"""
from __future__ import annotations

import asyncio
import random


class Backoff:
    """The delays of one retry loop. `delay` is the next one without jitter (what a log line says);
    `next()` returns it with jitter and doubles the one after; `reset()` after a success."""

    __slots__ = ("initial", "factor", "max", "jitter", "delay")

    def __init__(self, initial: float = 0.5, factor: float = 2.0, max: float = 30.0, jitter: float = 0.2) -> None:
        self.initial, self.factor, self.max, self.jitter = initial, factor, max, jitter
        self.delay = min(initial, max)

    def next(self) -> float:
        delay = self.delay
        self.delay = min(delay * self.factor, self.max)
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def reset(self) -> None:
        self.delay = min(self.initial, self.max)

    async def sleep(self, stop: asyncio.Event | None = None) -> bool:
        """Sleep the next delay, or until `stop` is set; True when stopped."""
        delay = self.next()
        if stop is None:
            await asyncio.sleep(delay)
            return False
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return True
        except TimeoutError:
            return False
