"""The stall watch and the stop guard (pipeline/streams/liveness.py), on a fake clock."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pipeline.streams import liveness
from pipeline.streams.liveness import EXIT_STALLED, EXIT_STOP_TIMEOUT, Progress, StallWatch, StopGuard


def test_waiting_records_with_no_finished_batch_are_a_stall_after_the_bound() -> None:
    p = Progress(10.0, now=0.0)
    p.observe(1.0, pending=0, settling=False)  # nothing waits: no stall, however long
    assert p.verdict(1.0 + 5.0) is None
    p.observe(3.0, pending=4, settling=False)
    assert p.verdict(10.9) is None  # the clock runs from the last time nothing waited (1.0)
    p.observe(11.5, pending=4, settling=False)
    assert p.verdict(11.5) == "4 records wait and no batch has finished for 10 s"
    p.batch_started(12.0)
    p.batch_done(12.5)
    p.observe(13.0, pending=4, settling=False)
    assert p.verdict(13.0) is None  # a batch finished: progress


def test_a_held_batch_and_a_still_loop_are_stalls_and_a_rebalance_is_not() -> None:
    p = Progress(10.0, now=0.0)
    p.batch_started(1.0)
    p.observe(5.0, pending=0, settling=False)
    assert p.verdict(11.5) == "the agent has held a batch for 10 s"
    p.batch_done(12.0)
    p.observe(12.0, pending=100, settling=True)  # a rebalance or recovery: the agent is not expected to fold
    p.observe(30.0, pending=100, settling=True)
    assert p.verdict(30.0) is None
    assert p.verdict(40.5) == "the event loop has not turned for 10 s"


class _Loop:
    def __init__(self) -> None:
        self.calls: list = []

    def is_closed(self) -> bool:
        return False

    def call_soon_threadsafe(self, callback) -> None:
        self.calls.append(callback)

    def run(self) -> None:  # the loop turning: what the watch asked for runs
        calls, self.calls = self.calls, []
        for callback in calls:
            callback()


def test_the_watch_marks_the_stall_then_exits_if_it_lasts() -> None:
    now = [0.0]
    exits: list[int] = []
    progress = Progress(10.0, now=0.0)
    loop = _Loop()
    waiting = [0]
    watch = StallWatch(progress, loop, lambda: (waiting[0], False), exit_after_s=5.0,  # type: ignore[arg-type]
                       exit=exits.append, clock=lambda: now[0])
    for t in range(0, 8):
        now[0] = float(t)
        watch.check()
        loop.run()
    waiting[0] = 3  # records come, the agent never finishes a batch
    for t in range(8, 30):
        now[0] = float(t)
        watch.check()
        loop.run()
        if t < 18:
            assert not progress.stalled, t
        if exits:
            break
    assert progress.stalled and "3 records wait" in progress.reason
    assert exits == [EXIT_STALLED] and now[0] >= 18 + 5
    report = progress.report(now[0], 1000.0)
    assert report["stalled"] and report["last_progress"] == 1000.0 - (now[0] - 7.0)


def test_the_watch_forgets_a_stall_that_ended() -> None:
    now = [0.0]
    progress = Progress(10.0, now=0.0)
    loop = _Loop()
    watch = StallWatch(progress, loop, lambda: (1, False), exit_after_s=60.0, exit=pytest.fail,  # type: ignore[arg-type]
                       clock=lambda: now[0])
    progress.batch_started(0.0)
    now[0] = 11.0
    watch.check()
    assert progress.stalled
    progress.batch_done(12.0)
    now[0] = 12.5
    loop.run()
    watch.check()
    assert not progress.stalled and progress.reason == ""


def test_the_stop_guard_exits_after_its_timeout_or_at_a_second_signal(capfd) -> None:
    exits: list[int] = []
    guard = StopGuard(0.2, exit=exits.append)
    guard.on_signal(signal.SIGTERM, None)
    assert exits == []
    guard.timer.join(5)  # type: ignore[union-attr]
    assert exits == [EXIT_STOP_TIMEOUT]
    assert "the clean stop did not end within 0.2 s" in capfd.readouterr().err
    again: list[int] = []
    guard = StopGuard(60.0, exit=again.append)
    guard.on_signal(signal.SIGTERM, None)
    guard.on_signal(signal.SIGINT, None)
    guard.timer.cancel()  # type: ignore[union-attr]
    assert again == [EXIT_STOP_TIMEOUT]
    err = capfd.readouterr().err
    assert "signal SIGINT during the stop" in err and "the stacks of every thread" in err


def test_sigusr1_writes_every_thread_and_task(capfd, caplog) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            liveness.install(loop, 30.0)

            async def parked() -> None:
                await loop.create_future()

            task = asyncio.ensure_future(parked())
            await asyncio.sleep(0)
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(0.2)
            task.cancel()
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
            import faulthandler
            faulthandler.unregister(signal.SIGUSR1)
            for sig, handler in before.items():
                signal.signal(sig, handler)

    with caplog.at_level("WARNING", logger="pipeline.worker"):
        asyncio.run(main())
    assert "most recent call first" in capfd.readouterr().err  # faulthandler's thread dump
    assert "parked" in caplog.text  # the asyncio task dump
