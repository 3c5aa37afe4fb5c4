"""What every source shares: the `Delivery` it yields, the `Source` interface the relay drives, and
`InOrder`, which turns settlements in any order into the in-order confirmations brokers take."""
from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Protocol


def _noop() -> None:
    pass


class Delivery:
    """One message from a source. `reason` is set when the source already knows the body cannot be
    decoded (e.g. a file line that is not JSON)."""

    __slots__ = ("body", "exchange", "routing_key", "settle", "reason")

    def __init__(self, body: bytes, exchange: str | None, routing_key: str | None,
                 settle: Callable[[], None] = _noop, reason: str | None = None) -> None:
        self.body = body
        self.exchange = exchange
        self.routing_key = routing_key
        self.settle = settle
        self.reason = reason


class Source(Protocol):
    description: str

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    def stop(self) -> None:
        """Take no new deliveries; the iterator ends soon after."""

    async def close(self) -> None:
        """Settle what can be settled and disconnect; unsettled deliveries come back later
        (RabbitMQ redelivers unacked messages, Kafka re-reads uncommitted offsets)."""


class InOrder:
    """Settles out of order, confirms in order: the highest position below which everything is
    settled. AMQP acks with `multiple=True` and Kafka commits an offset only for such a prefix."""

    __slots__ = ("entries", "confirm", "scheduled")

    def __init__(self, confirm: Callable[[int], None]) -> None:
        self.entries: collections.deque[list] = collections.deque()
        self.confirm = confirm  # called with the highest contiguous settled position
        self.scheduled = False

    def track(self, position: int) -> Callable[[], None]:
        entry = [position, False]
        self.entries.append(entry)
        return partial(self._settle, entry)

    def _settle(self, entry: list) -> None:
        entry[1] = True
        if not self.scheduled:
            # Records of one produce batch resolve together: one confirm for all of them.
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        entries, last = self.entries, None
        while entries and entries[0][1]:
            last = entries.popleft()[0]
        if last is not None:
            self.confirm(last)

    def __len__(self) -> int:
        return len(self.entries)
