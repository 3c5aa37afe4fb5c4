"""The cost stage's and the recovery stage's measuring: what bridge and worker cost at the rates a
fleet sends (idle included), and how long a worker takes to be ready after a restart.

CPU comes from /proc (`procs.CpuShare`), over a window in which nothing else but the offered events
reaches the two processes; a figure per event divides it by the events relayed in that window, so a
shared machine's slow hour changes it far less than it changes a rate.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ..procs import CpuShare, Proc
from .progress import Say


def cost_entry(rate: float, seconds: float, share: dict[str, Any], relayed: int) -> dict[str, Any]:
    """One entry of the report's `cost` list, from the window's CPU share (`CpuShare.figures` of a
    bridge and a worker) and the events relayed in it. CPU per event is None at idle."""
    per_s = relayed / seconds if seconds > 0 else 0.0
    entry: dict[str, Any] = {"rate": rate, "seconds": round(seconds, 1), "relayed_per_s": round(per_s, 1)}
    for name in ("bridge", "worker"):
        cores = share.get(f"{name}_cores")
        entry[f"{name}_cores"] = None if cores is None else round(cores, 4)
        entry[f"{name}_cpu_us_per_event"] = (round(cores / per_s * 1e6, 1)
                                             if cores is not None and per_s > 0 and rate > 0 else None)
    entry["machine_busy"] = share.get("machine_busy")
    return entry


async def idle(pids: dict[str, int], seconds: float, say: Say) -> dict[str, Any]:
    """The CPU share of `pids` over `seconds` with nothing published (heartbeats and timers only)."""
    say(f"  idle: {seconds:.0f} s with nothing published")
    cpu = CpuShare(pids)
    start = time.monotonic()
    while (left := seconds - (time.monotonic() - start)) > 0:
        await asyncio.sleep(min(5.0, left))
        if left > 5.0:
            say(f"  idle: {time.monotonic() - start:.0f}/{seconds:.0f} s")
    return cpu.figures()


def readiness(port: int) -> tuple[int, str] | None:
    """(HTTP status, reason) of a worker's /readyz; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read()).get("reason", "")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read()).get("reason", "")
        except ValueError:
            return exc.code, ""
    except (OSError, ValueError):
        return None


async def until_ready(worker: Proc, port: int, say: Say, label: str, timeout: float = 300,
                      poll_s: float = 0.02) -> dict[str, float | None]:
    """Poll a worker's /readyz from its start until it answers 200. Returns `ready_s` (seconds from
    the process's start), `recovering_s` (seconds it said "recovering tables", None if never) and
    `web_s` (when its web server first answered)."""
    started = time.perf_counter()  # the caller starts the process right before
    deadline = started + timeout
    web: float | None = None
    recovering_from: float | None = None
    next_say = started + 2.0
    while True:
        now = time.perf_counter()
        answer = await asyncio.to_thread(readiness, port)
        if answer is not None:
            web = web if web is not None else now - started
            status, reason = answer
            if reason == "recovering tables" and recovering_from is None:
                recovering_from = now
            if status == 200:
                return {"ready_s": now - started, "web_s": web,
                        "recovering_s": None if recovering_from is None else now - recovering_from}
        if not worker.alive():
            raise RuntimeError(f"{label} exited: {worker.tail()}")
        if now > deadline:
            raise TimeoutError(f"{label} not ready after {timeout:.0f}s ({answer}): {worker.tail()}")
        if now > next_say:
            next_say = now + 2.0
            say(f"  {label}: not ready after {now - started:.0f} s ({answer[1] if answer else 'web not up'})")
        await asyncio.sleep(poll_s)


def changelog_topics(app_id: str, tables: Sequence[str] = ("resources", "loss")) -> list[str]:
    """The changelog topics faust writes a worker's tables to (`<app id>-<table>-changelog`)."""
    return [f"{app_id}-{table}-changelog" for table in tables]
