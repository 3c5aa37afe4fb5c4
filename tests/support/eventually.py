"""Waiting for something the system under test does in its own time: one way, for every test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _failure(why: str, timeout: float, last: object, detail: Callable[[], str] | None) -> AssertionError:
    tail = f"\n{detail()}" if detail is not None else ""
    return AssertionError(f"{why}: not within {timeout:g} s (last seen: {last!r}){tail}")


def eventually(predicate: Callable[[], T], timeout: float, why: str, *, interval: float = 0.2,
               ignore: tuple[type[BaseException], ...] = (), detail: Callable[[], str] | None = None) -> T:
    """Call `predicate` until it returns something true and return that; fail with `why` after
    `timeout` seconds. Exceptions of the `ignore` types count as "not yet" (a server still
    starting); any other exception, and an AssertionError always, ends the wait at once (a process
    that died). `detail` adds
    context to the failure, e.g. a log tail."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = predicate()
            if last:
                return last  # type: ignore[return-value]
        except ignore as exc:
            if isinstance(exc, AssertionError):
                raise
            last = exc
        if time.monotonic() >= deadline:
            raise _failure(why, timeout, last, detail)
        time.sleep(interval)

