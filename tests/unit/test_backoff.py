"""The one retry rule of the bridge: the delay doubles to a ceiling, jitter around it, reset after a
success, and a sleep that a stop event cuts short."""
from __future__ import annotations

import asyncio
import time

import pytest

from pipeline import backoff as backoff_mod
from pipeline.backoff import Backoff


def test_delays_double_up_to_the_ceiling_then_reset() -> None:
    b = Backoff(initial=0.5, factor=2, max=3, jitter=0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    b.reset()
    assert b.delay == 0.5 and b.next() == 0.5


def test_the_produce_retry_schedule_reaches_30s_at_the_eighth_attempt() -> None:
    b = Backoff(initial=0.25, jitter=0)
    assert [b.next() for _ in range(9)] == [0.25, 0.5, 1, 2, 4, 8, 16, 30, 30]


def test_jitter_stays_within_its_fraction(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(backoff_mod.random, "uniform", lambda a, b: seen.append((a, b)) or b)
    b = Backoff(initial=1.0, jitter=0.2)
    assert b.next() == pytest.approx(1.2) and seen == [(0.8, 1.2)]
    assert b.delay == 2.0  # what the log line says: the next delay before jitter


async def test_sleep_without_stop_sleeps_and_says_not_stopped() -> None:
    b = Backoff(initial=0.01, jitter=0)
    started = time.monotonic()
    assert await b.sleep() is False
    assert time.monotonic() - started >= 0.009


async def test_sleep_ends_early_when_stop_is_set() -> None:
    stop = asyncio.Event()
    b = Backoff(initial=30, jitter=0)
    asyncio.get_running_loop().call_later(0.01, stop.set)
    started = time.monotonic()
    assert await b.sleep(stop) is True
    assert time.monotonic() - started < 5


async def test_sleep_with_an_unset_stop_runs_out() -> None:
    assert await Backoff(initial=0.01, jitter=0).sleep(asyncio.Event()) is False
