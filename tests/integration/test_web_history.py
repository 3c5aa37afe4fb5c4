"""Operation stats and recent alerts follow their partitions between workers: after a second worker
joins, and after the first one leaves, the fleet-wide figures are the same as before (reloaded from
the output topics by the new owner, forgotten by the old one: nothing lost, nothing counted twice)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.eventually import eventually
from tests.support.ports import free_port
from tests.support.web_traffic import WorkerProcess, feed_mixed_fleet, get

pytestmark = pytest.mark.integration

FLAGS = ("--lateness", "0", "--deadline", "baremetal.node.provision_set=300", "--orphan-grace", "60",
         "--replay-guard", "0")


def figures(url: str) -> tuple[dict, list[str], int]:
    stats = get(url + "/api/operations/stats")[1]
    alerts = get(url + "/api/alerts?limit=1000")[1]
    return stats["operations"], sorted(a["alert_id"] for a in alerts["alerts"]), stats["workers"]


def settle(urls: list[str], want: tuple[dict, list[str]], workers: int, procs: list[WorkerProcess], timeout: float = 60) -> None:
    def settled() -> bool:
        return all((ops, alerts, n) == (*want, workers) for ops, alerts, n in (figures(u) for u in urls))

    eventually(settled, timeout, f"every worker's figures are {want!r}", interval=0.5, ignore=(OSError, KeyError),
               detail=lambda: "\n".join([repr([figures(u) for u in urls])] + [p.log_tail(10) for p in procs]))


def test_stats_and_alerts_follow_partitions(tmp_path: Path, unique: str) -> None:
    prefix, app_id = f"webhist{unique}.", f"webhist-{unique}"
    first = WorkerProcess(tmp_path, app_id, prefix, free_port(), *FLAGS, name="first").start()
    second = WorkerProcess(tmp_path, app_id, prefix, free_port(), *FLAGS, name="second")
    try:
        first.wait_ready()
        fleet, counts = feed_mixed_fleet(first, prefix)
        time.sleep(0.5)
        operations, alerts, _ = figures(first.url)
        power = operations["baremetal.node.power_set"]
        assert 0 < power["errors"] <= 10 and 0 < power["count"] <= 200  # the window holds the last 15 min
        assert len(alerts) == 28  # 20 missing_end + 8 orphan_end

        second.start()
        second.wait_ready()
        settle([first.url, second.url], (operations, alerts), 2, [first, second])

        first.stop()
        settle([second.url], (operations, alerts), 1, [second])
    finally:
        first.stop()
        second.stop()
