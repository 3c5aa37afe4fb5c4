"""A worker whose agent stalls is seen and ends (issue 28): /healthz fails within --stall-timeout,
pipeline_agent_stalled says so, the stacks are logged, and the worker exits by itself (status 3);
SIGTERM ends a stuck worker within --stop-timeout (status 4), a second SIGTERM at once.

The agent is made to stall by the test hook PIPELINE_TEST_STALL_AGENT (pipeline/streams/liveness.py):
``wait`` holds its first batch while the event loop turns, ``block`` never gives the event loop's
thread back."""
from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request

import pytest

from pipeline.bench.procs import Names, Proc, delete_topics, start_worker
from pipeline.streams.liveness import EXIT_STALLED, EXIT_STOP_TIMEOUT
from tests.support.fresh_starts import relay_create
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.faults]

STALL_S = 6.0
SLACK_S = 20.0  # a loaded machine: the bounds are checked from below exactly, from above loosely
STACKS = "the stacks of every thread"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _stalled_worker(broker, tmp_path, mode: str, *extra: str,
                          web_port: int | None = None) -> tuple[Proc, Names, float]:
    """A worker whose agent has taken its first batch and stalls there (`mode`), and when the
    records of that batch were sent."""
    names = Names()
    proc = start_worker(names, bootstrap=broker.kafka, partitions=3, data_dir=str(tmp_path / names.run),
                        store="rocksdb://", web_port=web_port, env={"PIPELINE_TEST_STALL_AGENT": mode},
                        extra=["--loglevel", "info", *extra])
    await proc.wait_for("Ready", 90)
    sent = time.monotonic()
    await relay_create(broker.kafka, names.topic_prefix)
    await proc.wait_for("the agent stalls on purpose", 60)
    return proc, names, sent


async def _exit_within(proc: Proc, timeout_s: float) -> tuple[int, float]:
    began = time.monotonic()
    while proc.alive() and time.monotonic() - began < timeout_s:
        await asyncio.sleep(0.1)
    took = time.monotonic() - began
    if proc.alive():
        proc.popen.kill()
        proc.popen.wait()
        raise AssertionError(f"still running {timeout_s:g} s later: {proc.tail(40)}")
    return proc.popen.returncode, took


def test_a_held_batch_fails_healthz_and_the_worker_exits(broker, tmp_path) -> None:
    async def run() -> None:
        port = free_port()
        proc, names, held = await _stalled_worker(broker, tmp_path, "wait", "--stall-timeout", str(STALL_S),
                                                  web_port=port)
        try:
            status, body = _get(port, "/healthz")
            assert status == 200, body  # the batch is held, the bound has not passed
            while status == 200 and time.monotonic() - held < STALL_S + SLACK_S:
                await asyncio.sleep(0.2)
                status, body = _get(port, "/healthz")
            failed_after = time.monotonic() - held
            # either reason may come first: the record waited (since the last idle check), the batch is held
            assert status == 503 and ("held a batch" in body or "records wait" in body), (status, body)
            # not before the bound (the clock of waiting records starts at the last check before they
            # came, at most the watch's 1 s interval before they were sent)
            assert failed_after >= STALL_S - 1.0, failed_after
            _, metrics = _get(port, "/metrics")
            assert "pipeline_agent_stalled 1.0" in metrics
            assert "pipeline_agent_last_progress_timestamp_seconds" in metrics
            code, _ = await _exit_within(proc, STALL_S / 2 + SLACK_S)
            assert code == EXIT_STALLED, proc.tail(20)
            log = proc.text()
            assert "the agent is stalled: " in log and STACKS in log
            assert "stall_for_test" in log, log[log.find("stalled"):][:6000]  # the held agent is in the dump
        finally:
            await proc.stop()
            proc.cleanup()
            await delete_topics(broker.kafka, [f"bench-{names.run}.", names.app_id])

    asyncio.run(run())


def test_a_blocked_event_loop_makes_the_worker_exit(broker, tmp_path) -> None:
    async def run() -> None:
        proc, names, _ = await _stalled_worker(broker, tmp_path, "block", "--stall-timeout", str(STALL_S))
        try:
            code, took = await _exit_within(proc, STALL_S * 1.5 + SLACK_S)
            assert code == EXIT_STALLED, proc.tail(20)
            assert took >= STALL_S, took
            log = proc.text()
            assert "the event loop has not turned" in log and STACKS in log and "stall_for_test" in log
        finally:
            await proc.stop()
            proc.cleanup()
            await delete_topics(broker.kafka, [f"bench-{names.run}.", names.app_id])

    asyncio.run(run())


@pytest.mark.parametrize("second_signal", [False, True])
def test_sigterm_ends_a_stuck_worker(broker, tmp_path, second_signal: bool) -> None:
    stop_timeout = 5.0

    async def run() -> None:
        # no stall watch: only the stop guard can end it
        proc, names, _ = await _stalled_worker(broker, tmp_path, "block", "--stall-timeout", "0",
                                            "--stop-timeout", str(stop_timeout))
        try:
            proc.popen.send_signal(signal.SIGTERM)
            if second_signal:
                await asyncio.sleep(0.5)
                proc.popen.send_signal(signal.SIGTERM)
                code, took = await _exit_within(proc, SLACK_S)
                assert took < stop_timeout, took  # at once, not after the timeout
            else:
                code, took = await _exit_within(proc, stop_timeout + SLACK_S)
                assert took >= stop_timeout - 0.5, took
            assert code == EXIT_STOP_TIMEOUT, proc.tail(20)
            log = proc.text()
            assert STACKS in log and "stall_for_test" in log
            assert ("during the stop" if second_signal else "did not end within") in log
        finally:
            await proc.stop()
            proc.cleanup()
            await delete_topics(broker.kafka, [f"bench-{names.run}.", names.app_id])

    asyncio.run(run())
