"""The worker's liveness: its stacks on demand, a stop that always ends, a stalled agent seen.

A worker whose agent stops folding records while they wait looks alive (its process runs, its web
views answer) and writes nothing: the worst failure this product can have. Whatever the cause,
this module makes it visible and ends it:

* SIGUSR1 writes every thread's stack (faulthandler: written by the signal handler itself, so a
  worker whose event loop never turns answers too) and every asyncio task's await chain (when the
  loop turns) to the log.
* SIGTERM / SIGINT start faust's clean stop. If it has not ended after ``--stop-timeout``, or on a
  second signal, the stacks are written and the process ends at once with `EXIT_STOP_TIMEOUT`
  (nothing else runs: like a SIGKILL, the next start rebuilds the tables from their changelogs).
* `Progress` says whether the agent stalls: records wait (the agent's lag on its relay partitions
  is above zero) or a batch is held, and no batch has finished for ``--stall-timeout``; or the
  event loop itself has not turned for that long. Then ``/healthz`` fails (the liveness probe),
  ``pipeline_agent_stalled`` is 1, the stacks are logged, and once the stall has lasted half as
  long again the worker exits by itself with `EXIT_STALLED`, so the orchestrator restarts it.
  Rebalancing and table recovery are not stalls (faust logs their progress; /readyz is 503).

The watchdog is a thread: it sees a blocked event loop, which nothing inside the loop can.

Test hook: ``PIPELINE_TEST_STALL_AGENT=block|wait`` makes the agent stall on its first batch,
holding it (``block``: the event loop's thread never comes back to the loop; ``wait``: the agent
awaits forever while the loop turns). Only tests/faults/test_stalled_worker.py sets it; it is read once, here.
"""
from __future__ import annotations

import asyncio
import faulthandler
import gc
import io
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["EXIT_STALLED", "EXIT_STOP_TIMEOUT", "Progress", "StallWatch", "agent_pending", "dump_stacks",
           "install", "stall_for_test", "task_stacks"]

log = logging.getLogger("pipeline.worker")

EXIT_STALLED = 3  # the agent made no progress while records waited (README: Known issues)
EXIT_STOP_TIMEOUT = 4  # the clean stop did not end within --stop-timeout, or a second signal came
TEST_STALL = os.environ.get("PIPELINE_TEST_STALL_AGENT", "")


def _stderr() -> Any:
    return sys.__stderr__ or sys.stderr  # the process's own stderr, whatever faust redirected


def dump_stacks(reason: str) -> None:
    """Every thread's stack to stderr, from any thread, whatever the event loop is doing."""
    out = _stderr()
    out.write(f"--- {reason}: the stacks of every thread ---\n")
    out.flush()
    faulthandler.dump_traceback(file=out, all_threads=True)
    out.flush()


def task_stacks(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every asyncio task's await chain, down to what it waits on (in the event loop's thread)."""
    out = io.StringIO()
    for task in asyncio.all_tasks(loop):
        out.write(f"{task.get_name()}:\n")
        coro: Any = task.get_coro()
        while coro is not None:  # follow the await chain down to what is pending
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                out.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
            coro = _awaited(coro)
    return out.getvalue()


def _awaited(coro: Any) -> Any:
    """What `coro` awaits, through the wrappers that hide it (faust awaits its agent through an
    object's ``__await__``: a ``coroutine_wrapper``, which holds the coroutine but does not name it)."""
    awaited = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    if awaited is not None and not hasattr(awaited, "cr_frame") and not hasattr(awaited, "ag_frame"):
        inner = [r for r in gc.get_referents(awaited) if hasattr(r, "cr_frame") or hasattr(r, "ag_frame")]
        if inner:
            return inner[0]
    return awaited


class Progress:
    """The agent's progress as the watchdog judges it (times: `time.monotonic`).

    The agent calls `batch_started` / `batch_done` around each batch; the event loop reports what
    waits (`observe`) whenever the watchdog asks; `verdict` is None while the agent keeps up."""

    def __init__(self, bound_s: float, now: float) -> None:
        self.bound_s = bound_s
        self.last_progress = now  # a batch finished, or nothing waited
        self.held_since: float | None = None  # the agent has been folding a batch since then
        self.loop_seen = now  # the event loop last ran `observe`
        self.pending = 0  # records waiting for the agent, at the last `observe`
        self.stalled_since: float | None = None  # `verdict` first said so (the watchdog sets it)
        self.reason = ""

    def batch_started(self, now: float) -> None:
        self.held_since = now

    def batch_done(self, now: float) -> None:
        self.held_since = None
        self.last_progress = now

    def observe(self, now: float, pending: int, settling: bool) -> None:
        """From the event loop: `pending` records wait for the agent; `settling`: a rebalance or a
        table recovery is under way (the agent is not expected to fold then)."""
        self.loop_seen = now
        self.pending = pending
        if settling or (pending == 0 and self.held_since is None):
            self.last_progress = now  # nothing to do is no stall

    def verdict(self, now: float) -> str | None:
        bound = self.bound_s
        if now - self.loop_seen > bound:
            return f"the event loop has not turned for {now - self.loop_seen:.0f} s"
        if self.held_since is not None and now - self.held_since > bound:
            return f"the agent has held a batch for {now - self.held_since:.0f} s"
        if self.pending > 0 and now - self.last_progress > bound:
            return f"{self.pending} records wait and no batch has finished for {now - self.last_progress:.0f} s"
        return None

    @property
    def stalled(self) -> bool:
        return self.stalled_since is not None

    def report(self, now: float, wall: float) -> dict[str, Any]:
        """For /healthz and /metrics: stalled or not, why, and the last progress (epoch seconds)."""
        return {"stalled": self.stalled, "reason": self.reason, "waiting": self.pending,
                "last_progress": wall - (now - self.last_progress)}


def agent_pending(app: Any, sources: Iterable[str], folded: dict[tuple[str, int], int]) -> int:
    """Records of the relay partitions this worker is active for that the agent has not folded:
    per partition, its high-water mark minus the next offset to fold (after the last one folded,
    else the committed one, else the last one read). Partitions with none of these are left out."""
    try:
        actives = app.assignor.assigned_actives()
    except Exception:  # noqa: BLE001 - before the first assignment nothing waits for this worker
        return 0
    wanted = set(sources)
    committed = app.monitor.tp_committed_offsets or {}
    read = app.monitor.tp_read_offsets or {}
    pending = 0
    for tp in actives:
        if tp.topic not in wanted:
            continue
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no fetch answered yet
            continue
        if highwater is None:
            continue
        done = folded.get((tp.topic, tp.partition))
        if done is not None:
            position = done + 1
        elif tp in committed:
            position = committed[tp]
        elif tp in read:
            position = read[tp] + 1
        else:
            continue
        pending += max(0, int(highwater) - int(position))
    return pending


class StallWatch(threading.Thread):
    """The watchdog thread: asks the event loop what waits, judges `progress`, acts on a stall."""

    def __init__(self, progress: Progress, loop: asyncio.AbstractEventLoop,
                 sample: Callable[[], tuple[int, bool]], exit_after_s: float,
                 exit: Callable[[int], None] = os._exit, clock: Callable[[], float] = time.monotonic,
                 interval_s: float = 1.0) -> None:
        super().__init__(name="pipeline-stall-watch", daemon=True)
        self.progress = progress
        self.loop = loop
        self.sample = sample  # (pending records, settling), run in the loop
        self.exit_after_s = exit_after_s
        self.exit = exit
        self.clock = clock
        self.interval_s = interval_s
        self.halt = threading.Event()

    def _observe(self) -> None:
        try:
            pending, settling = self.sample()
        except Exception as exc:  # noqa: BLE001 - a failed sample must not look like progress
            log.warning("stall watch: could not read the agent's lag (%s)", exc)
            return
        self.progress.observe(self.clock(), pending, settling)

    def check(self) -> None:
        """One round: what the loop reported last time, judged now."""
        progress = self.progress
        now = self.clock()
        reason = progress.verdict(now)
        since = progress.stalled_since
        if reason is None:
            if since is not None:
                log.warning("the agent progresses again after a stall of %.0f s", now - since)
            progress.stalled_since, progress.reason = None, ""
        elif since is None:
            progress.stalled_since, progress.reason = now, reason
            log.error("the agent is stalled: %s; /healthz fails, and the worker exits (status %d) "
                      "if it lasts %.0f s more", reason, EXIT_STALLED, self.exit_after_s)
            dump_stacks(f"stalled: {reason}")
            self._in_loop(lambda: log.warning("asyncio tasks:\n%s", task_stacks(self.loop)))  # if it turns
        elif now - since >= self.exit_after_s:
            dump_stacks(f"still stalled: {reason}")
            log.critical("the agent is still stalled (%s): exiting with status %d so that the worker "
                         "is restarted", reason, EXIT_STALLED)
            logging.shutdown()
            self.exit(EXIT_STALLED)
        self._in_loop(self._observe)

    def _in_loop(self, callback: Callable[[], None]) -> None:
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(callback)
            except RuntimeError:  # the loop closed meanwhile: the worker is ending
                pass

    def run(self) -> None:
        while not self.halt.wait(self.interval_s):
            self.check()


class StopGuard:
    """SIGTERM / SIGINT: a stop that ends within `timeout_s`, and at once on a second signal."""

    def __init__(self, timeout_s: float, exit: Callable[[int], None] = os._exit) -> None:
        self.timeout_s = timeout_s
        self.exit = exit
        self.requested: float | None = None
        self.timer: threading.Timer | None = None
        self.watch: StallWatch | None = None  # judges no more once a stop began (this bounds it)

    def force(self, why: str) -> None:
        dump_stacks(f"forced exit: {why}")
        _stderr().write(f"worker: {why}; exiting with status {EXIT_STOP_TIMEOUT}\n")
        _stderr().flush()
        self.exit(EXIT_STOP_TIMEOUT)

    def on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler
        """A Python-level handler: it runs even while the event loop is busy, and the loop's own
        handler (faust's clean stop) still runs through the loop's wakeup descriptor."""
        if self.requested is not None:
            self.force(f"signal {signal.Signals(signum).name} during the stop")
            return
        self.requested = time.monotonic()
        if self.watch is not None:
            self.watch.halt.set()
        self.timer = threading.Timer(self.timeout_s, self.force,
                                     (f"the clean stop did not end within {self.timeout_s:g} s",))
        self.timer.daemon = True
        self.timer.start()


def install(loop: asyncio.AbstractEventLoop, stop_timeout_s: float) -> StopGuard:
    """In the event loop's (main) thread, after faust installed its own handlers: the stop guard
    on SIGTERM and SIGINT, the asyncio task dump and faulthandler's thread dump on SIGUSR1."""
    guard = StopGuard(stop_timeout_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, guard.on_signal)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("asyncio tasks:\n%s", task_stacks()))
    # after the loop's handler, which it calls in turn (chain): the thread stacks come first
    faulthandler.register(signal.SIGUSR1, file=_stderr(), all_threads=True, chain=True)
    return guard


async def stall_for_test() -> None:
    """The agent's first batch never ends (PIPELINE_TEST_STALL_AGENT, see the module's docstring)."""
    log.warning("PIPELINE_TEST_STALL_AGENT=%s: the agent stalls on purpose (tests only)", TEST_STALL)
    if TEST_STALL == "block":
        while True:  # the event loop's thread stays here: nothing in the loop runs again
            time.sleep(0.01)
    await asyncio.get_running_loop().create_future()  # never set: the loop turns, the agent waits


def worker(rt: Any) -> Any:
    """faust's Worker for `rt.app`, with the stop guard, the stack dumps and the stall watch
    installed once faust has installed its signal handlers (at its first start, in the loop).
    Call `stopped()` on it once `execute_from_commandline` has returned."""
    import faust

    settings = rt.settings

    class Worker(faust.Worker):
        guard: StopGuard | None = None
        watch: StallWatch | None = None

        def install_signal_handlers(self) -> None:
            super().install_signal_handlers()
            self.guard = install(self.loop, settings.stop_timeout_s)
            if settings.stall_timeout_s > 0:
                app, progress = rt.app, rt.progress
                sources, folded = set(rt.topic_names.sources), rt.folded

                def sample() -> tuple[int, bool]:
                    settling = bool(app.rebalancing or getattr(app, "in_recovery", False))
                    return agent_pending(app, sources, folded), settling

                self.watch = StallWatch(progress, self.loop, sample, settings.stall_timeout_s / 2)
                self.guard.watch = self.watch
                self.watch.start()

        def stopped(self) -> None:
            if self.watch is not None:
                self.watch.halt.set()
            if self.guard is not None and self.guard.timer is not None:
                self.guard.timer.cancel()

    return Worker(rt.app, loglevel=settings.loglevel, quiet=True)
