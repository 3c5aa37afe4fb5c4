"""The worker stages: `pipeline worker` processes reading a full topic, alone or as one group,
their progress read from their /metrics (else from the group's committed offsets)."""
from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.request
from collections.abc import Sequence

from ..procs import Proc
from .progress import Say, Ticker, Window, cpu_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RELAY_RECORDS = re.compile(rb"^pipeline_relay_records(?:_total)?(?:\{[^}]*\})? ([0-9.e+]+)", re.M)


def worker_records(port: int) -> int | None:
    """Relay records the worker has read, from its /metrics; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read()
    except OSError:
        return None
    match = _RELAY_RECORDS.search(text)
    return int(float(match.group(1))) if match else None


async def committed(bootstrap: str, group: str) -> int:
    """Fallback progress: the worker's committed offsets (faust commits every few seconds)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(max(0, meta.offset) for tp, meta in offsets.items() if ".notifications." in tp.topic)
    except Exception:  # noqa: BLE001 - the group may not exist yet
        return 0
    finally:
        await admin.close()


async def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, members) of a consumer group; ("", 0) while it does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        for response in await admin.describe_consumer_groups([group]):
            for entry in response.groups:  # (error, group id, state, protocol type, protocol, members, ...)
                if entry[1] == group:
                    return entry[2], len(entry[5])
        return "", 0
    except Exception:  # noqa: BLE001 - no coordinator yet: not there
        return "", 0
    finally:
        await admin.close()


def _check_alive(procs: Sequence[Proc]) -> None:
    for p in procs:
        if not p.alive():
            raise RuntimeError(f"{p.name} exited: {p.tail()}")


async def wait_group(bootstrap: str, group: str, members: int, say: Say, procs: Sequence[Proc],
                     timeout: float = 180) -> int:
    """Wait until `group` is Stable with `members` members (then 2 s more, for the assignment to
    reach every member)."""
    deadline = time.monotonic() + timeout
    state, count = "", 0
    while time.monotonic() < deadline:
        state, count = await group_members(bootstrap, group)
        if state == "Stable" and count >= members:
            await asyncio.sleep(2.0)
            return count
        _check_alive(procs)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"group {group} is {state or 'absent'} with {count} of {members} members after {timeout:.0f}s")


async def wait_worker(worker: Proc, port: int, bootstrap: str, group: str, expected: int, say: Say,
                      label: str = "worker", timeout: float = 900) -> tuple[Window, str]:
    """One worker's rate on a full topic (see `wait_workers`)."""
    return await wait_workers([(worker, port)], bootstrap, group, expected, say, label, timeout)


async def wait_workers(workers: Sequence[tuple[Proc, int]], bootstrap: str, group: str, expected: int, say: Say,
                       label: str = "worker", timeout: float = 900) -> tuple[Window, str]:
    """Workers of one group on a full topic: relay records read (the sum of their /metrics, else
    the group's committed offsets), from the first to the `expected`-th, with their CPU time.
    Returns (the window, how records were counted)."""
    tick = Ticker(say, label, expected)
    window = Window()
    source = "metrics"
    procs = [w for w, _ in workers]
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if source == "metrics":
            counts = [worker_records(port) for _, port in workers]
            n = sum(c or 0 for c in counts)
            if None in counts and n == 0 and time.monotonic() > started + 90:  # no /metrics after 90 s
                source = "committed offsets"
        else:
            n = await committed(bootstrap, group)
        window.add(time.perf_counter(), n, cpu_of(procs))
        for w in procs:
            w.sample()
        tick(n)
        if n >= expected:
            return window, source
        _check_alive(procs)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label} read {n} of {expected} in {timeout:.0f}s")
        # rendering /metrics costs the worker ~20 ms (measured under cProfile): once a second is
        # enough for a rate over tens of seconds and keeps the probe out of the figure
        await asyncio.sleep(1.0)
