"""What `make run` shows, on private topics: the simulator loses ends and answers as Ironic's and Glance's
read APIs for its own fleet (its stand-in, `--api-port`), the worker raises missing_end, `pipeline
reconcile` asks the simulator and the operations close reconciled. The simulator's ground truth says
which ends it dropped: not one operation is reconciled whose end was sent, and each reconciled outcome
is the true one."""
from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tests.support.bridge import delete_topics
from tests.support.eventually import eventually
from tests.support.faults import derived, topics_starting
from tests.support.ports import free_port
from tests.support.processes import spawn, stop

KAFKA = "127.0.0.1:9092"
OUTCOME = {"end": "success", "error": "error"}


@pytest.mark.integration
def test_the_simulator_s_lost_ends_are_reconciled_live(unique: str, tmp_path: Path) -> None:
    prefix, out, port = f"sim{unique}.notifications.", f"sim{unique}.pipeline.", free_port()
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"clouds:\n  simulator:\n    auth_type: none\n"
                      f"    baremetal_endpoint_override: http://127.0.0.1:{port}/v1\n"
                      f"    image_endpoint_override: http://127.0.0.1:{port}/v2\n")
    common = ["--topic-prefix", prefix, "--topic-partitions", "3"]
    truth = tmp_path / "truth.json"
    worker = spawn("worker", *common, "--app-id", f"sim-{unique}", "--output-prefix", out, "--store", "memory://",
                   "--no-web", log=tmp_path / "worker.log")
    procs = [worker]
    try:
        eventually(lambda: f"{out}alerts" in asyncio.run(topics_starting(KAFKA, out)), 60,
                   "the worker created its topics", interval=0.5)
        # 30 simulated seconds a wall second: a power_set's 300 s deadline passes in 10 s
        simulate = spawn("simulate", "--output", "kafka", *common, "--nodes", "80", "--images", "10",
                         "--clock-speed", "30", "--think", "60", "--loss", "0.06", "--seed", "11",
                         "--api-port", str(port), "--duration", "45", "--no-sweep", "--truth", str(truth),
                         log=tmp_path / "simulate.log")
        procs.append(simulate)
        eventually(lambda: "answering as Ironic's and Glance's read APIs" in (tmp_path / "simulate.log").read_text(),
                   60, "the simulator's API", interval=0.5)
        reconcile = spawn("reconcile", *common, "--output-prefix", out, "--os-cloud", "simulator",
                          "--os-client-config-file", str(clouds), "--source-label", "simulator", "--recheck", "2",
                          "--metrics-port", "0", "--group-id", f"simrec-{unique}", log=tmp_path / "reconcile.log")
        procs.append(reconcile)

        def reconciled():
            d = asyncio.run(derived(KAFKA, out))
            return d if sum(op["reconciled"] for op in d.operations.values()) >= 3 else None

        eventually(reconciled, 150, "three operations reconciled from the simulator's API",
                   detail=lambda: (tmp_path / "reconcile.log").read_text()[-2000:], interval=2)
        # the first signal winds the fleet down, a second (once the first was taken) stops it at once,
        # and the truth file is written
        simulate.send_signal(signal.SIGTERM)
        eventually(lambda: "Ctrl-C again to stop now" in (tmp_path / "simulate.log").read_text()
                   or simulate.poll() is not None, 30, "the simulator winding down", interval=0.2)
        if simulate.poll() is None:
            simulate.send_signal(signal.SIGTERM)
        assert simulate.wait(60) in (0, 1), (tmp_path / "simulate.log").read_text()[-2000:]

        operations = {o["start_message_id"]: o for o in json.loads(truth.read_text())["operations"]}
        got = asyncio.run(derived(KAFKA, out))
        closed = [op for op in got.operations.values() if op["reconciled"]]
        sent = [op for op in closed if not operations.get(op["start_message_id"], {}).get("end_dropped")]
        assert not sent, f"reconciled although its end was sent: {sent}"
        wrong = [op for op in closed if OUTCOME.get(operations[op["start_message_id"]]["outcome"]) != op["outcome"]]
        assert not wrong, wrong
        assert got.duplicate_ids.get("operation", 0) == 0
        observed = [a for a in got.alerts.values() if a["kind"] == "reconciled"]
        assert len(observed) >= len(closed)
        print(f"\n{sum(o['end_dropped'] for o in operations.values())} ends dropped by the simulator, "
              f"{len(closed)} operations reconciled from its API, 0 whose end was sent, 0 with another outcome")
    finally:
        stop(*procs)
        for topics in (prefix, out, f"sim-{unique}"):
            asyncio.run(delete_topics(topics))
