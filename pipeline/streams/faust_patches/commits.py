"""The consumer's commits."""
from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any


class _TableWhenLogged:
    """A log table made only when a log record formats it (``%s``)."""

    __slots__ = ("args", "kwargs", "make")

    def __init__(self, make: Callable[..., str], args: tuple, kwargs: dict) -> None:
        self.make, self.args, self.kwargs = make, args, kwargs

    def __str__(self) -> str:
        return self.make(*self.args, **self.kwargs)


def commit_log_on_demand() -> None:
    """13. The consumer builds its "COMMITTING OFFSETS" table only when that debug line is logged.

    Symptom: `Consumer._commit_offsets` (faust/transport/consumer.py) draws a terminal table of every
    offset it commits (terminaltables: widths, borders, padding of each cell) before every commit, for
    a `log.dev` line that is dropped below debug level. An idle worker commits the bridges'
    heartbeats every few seconds; that table was 7 % of its CPU (py-spy, idle worker, this project's
    machine), and every commit under load draws one.
    How: the module's `terminal` is swapped for a namespace whose `logtable` returns an object that
    draws the table in its `__str__`, which logging calls only for a record it emits. Nothing else
    in that module uses `terminal` (`PATCHED_SOURCES` pins the method).
    Upstream: faust-streaming 0.15.3 still draws it; no issue filed.
    Can go: if faust guards the table with the log level.
    """
    from faust.transport import consumer

    terminal = consumer.terminal
    if isinstance(terminal, SimpleNamespace):  # already applied
        return

    def logtable(*args: Any, **kwargs: Any) -> _TableWhenLogged:
        return _TableWhenLogged(terminal.logtable, args, kwargs)

    consumer.terminal = SimpleNamespace(logtable=logtable)  # type: ignore[assignment]


def commit_against_one_assignment(consumer: Any) -> None:
    """14. A commit reads the consumer's assignment once, not once per partition it commits.

    Symptom: `AIOKafkaConsumerThread._commit` (faust/transport/drivers/aiokafka.py) filters the
    offsets with ``tp in self.assignment()``, and `assignment()` converts the whole assignment to a
    new set of faust TPs each time: about 80 partitions times 80 conversions per commit. An idle
    worker commits the bridges' heartbeats every few seconds; that filter was a tenth of the Python
    its consumer thread ran (py-spy, idle worker).
    How: the method below is faust's, with the assignment taken once (`PATCHED_SOURCES` pins it).
    Upstream: unchanged in faust-streaming 0.15.3; no issue filed.
    Can go: if faust hoists the call.
    """
    from aiokafka.errors import CommitFailedError, IllegalStateError
    from aiokafka.structs import OffsetAndMetadata
    from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

    thread = consumer._thread

    async def _commit(offsets: Any) -> bool:
        kafka = thread._ensure_consumer()
        now = time.monotonic()
        assigned = thread.assignment()
        commitable_offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            aiokafka_offsets = {
                ensure_aiokafka_TP(tp): OffsetAndMetadata(offset, "") for tp, offset in commitable_offsets.items()
            }
            thread.tp_last_committed_at.update({tp: now for tp in commitable_offsets})
            await kafka.commit(aiokafka_offsets)
        except CommitFailedError as exc:
            if "already rebalanced" in str(exc):
                return False
            thread.log.exception("Committing raised exception: %r", exc)
            await thread.crash(exc)
            return False
        except IllegalStateError as exc:
            thread.log.exception("Got exception: %r\nCurrent assignment: %r", exc, thread.assignment())
            await thread.crash(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - faust's own: any failure crashes the consumer
            thread.log.exception("Got exception: %r\nCurrent assignment: %r", exc, thread.assignment())
            await thread.crash(exc)
            return False
        return True

    thread._commit = _commit
