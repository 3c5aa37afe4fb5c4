"""The bridge stage: `pipeline bridge` relaying a full queue, counted in Kafka."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ..procs import Proc, RecordCounter
from .progress import Say, Ticker, Window, cpu_of


async def wait_relayed(bridge: Proc, bootstrap: str, topics: Sequence[str], expected: int, say: Say,
                       timeout: float = 900) -> Window:
    """The bridge's relay on a full queue: records counted in Kafka (end offsets), from the first
    to the `expected`-th, sampling the bridge's memory and CPU on the way."""
    async with RecordCounter(bootstrap, topics) as counter:
        return await _wait_relayed(bridge, counter, expected, say, timeout)


async def _wait_relayed(bridge: Proc, counter: RecordCounter, expected: int, say: Say, timeout: float) -> Window:
    tick = Ticker(say, "bridge relay", expected)
    window = Window()
    deadline = time.monotonic() + timeout
    while True:
        n = await counter.count()
        window.add(time.perf_counter(), n, cpu_of([bridge]))
        bridge.sample()
        tick(n)
        if n >= expected:
            return window
        if not bridge.alive():
            raise RuntimeError(f"bridge exited: {bridge.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"bridge relayed {n} of {expected} in {timeout:.0f}s")
        await asyncio.sleep(0.5)
