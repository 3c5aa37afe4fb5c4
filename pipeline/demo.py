"""`make run`: the whole product on this machine.

Starts the local brokers (unless they already run), the bridge, one worker with its web views on
http://127.0.0.1:6066/ and the fleet simulator publishing through oslo.messaging into RabbitMQ, then
prints every finished operation read back from `pipeline.operations`. Ctrl-C stops every process it
started, brokers included when this run started them, and nothing else.

The simulator also answers as Ironic's and Glance's read APIs for its fleet (its own stand-in, on
127.0.0.1:16385, labelled so in its log), and `pipeline reconcile` asks it about every end the
simulator lost: those operations print as "(reconciled)" once their deadline passed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from pipeline import codec, registry

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("PIPELINE_STACK_DIR", ROOT / ".stack"))
LOGS = STATE / "run"
OPERATIONS_TOPIC = "pipeline.operations"
SIMULATED_API_PORT = 16385


def _start(name: str, *args: str) -> subprocess.Popen:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / f"{name}.log", "ab")
    print(f"[run] {name}: {' '.join(args)}  (log: {LOGS / f'{name}.log'})", flush=True)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
    )


def _say(line: str) -> None:
    """Print, unless the reader went away (`make run | tee log` and Ctrl-C: tee is gone first), so
    that stopping the children never ends half-way on a broken pipe."""
    try:
        print(line, flush=True)
    except (BrokenPipeError, OSError):
        pass


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for _name, proc in reversed(procs.items()):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    simulate = procs.get("simulate")
    if simulate is not None and simulate.poll() is None:
        # its first signal winds the fleet down at clock speed for minutes; a second, once the first
        # was taken (signals do not queue), stops it now
        log = LOGS / "simulate.log"
        until = time.monotonic() + 3
        while time.monotonic() < until and simulate.poll() is None and \
                "Ctrl-C again to stop now" not in log.read_text(errors="replace")[-4000:]:
            time.sleep(0.1)
        if simulate.poll() is None:
            simulate.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for name, proc in reversed(procs.items()):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _say(f"[run] {name}: stopped")


def _describe(op: dict) -> str:
    seconds = (op.get("duration_ms") or 0) / 1000
    if op.get("to_power"):
        change = f" → {op['to_power']}"
    elif op.get("provision_state"):
        change = f" {op.get('previous_provision_state') or '?'} → {op['provision_state']}"
    else:
        change = ""
    ended = op["ended_at"].strftime("%H:%M:%S") if op.get("ended_at") else "--:--:--"
    subject = (op.get("node_uuid") or op.get("resource_uuid") or "")[:8]
    late = " (reconciled from the API)" if op.get("reconciled") else " (late)" if op.get("late") else ""
    return f"{ended}  {op['operation']:<32} {subject}  {op['outcome']:<8} {seconds:8.1f} s{change}{late}"


async def _print_operations(stop: asyncio.Event, bootstrap: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                enable_auto_commit=False, metadata_max_age_ms=2000)
    # A pattern, not the name: naming a missing topic would make the broker auto-create it with
    # one partition before the worker creates it with the partition count of its sources.
    consumer.subscribe(pattern=f"^{OPERATIONS_TOPIC.replace('.', '[.]')}$")
    await consumer.start()
    try:
        print("[run] finished operations, as the worker writes them to pipeline.operations:", flush=True)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    _say(_describe(codec.decode_value(record.value)))
    finally:
        await consumer.stop()


def main() -> int:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # metadata retries while topics appear
    pids_before = {p.name for p in STATE.glob("*.pid")}
    if subprocess.call(["bash", str(ROOT / "stack" / "up.sh")]) != 0:
        return 1
    started_brokers = {p.name for p in STATE.glob("*.pid")} - pids_before
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    schemas = registry.from_env()  # AVRO_FRAMING=registry: the processes below read it too
    if schemas is not None:
        registry.attach(schemas, {})  # so this printer resolves the worker's schema ids
        print(f"[run] Avro values in registry framing, schemas in {schemas.url}", flush=True)

    procs: dict[str, subprocess.Popen] = {}
    stop = asyncio.Event()
    try:
        procs["worker"] = _start("worker", "worker", "--web-port", "6066")
        procs["bridge"] = _start("bridge", "bridge")
        procs["simulate"] = _start(
            "simulate", "simulate", "--output", "rabbit", "--nodes", "200", "--images", "20",
            "--clock-speed", "1", "--think", "60", "--loss", "0.02", "--duplicates", "0.01",
            "--api-port", str(SIMULATED_API_PORT),
        )
        clouds = LOGS / "clouds.yaml"  # the simulator's API, no authentication: a demo's, not a cloud's
        clouds.write_text(f"clouds:\n  simulator:\n    auth_type: none\n"
                          f"    baremetal_endpoint_override: http://127.0.0.1:{SIMULATED_API_PORT}/v1\n"
                          f"    image_endpoint_override: http://127.0.0.1:{SIMULATED_API_PORT}/v2\n")
        procs["reconcile"] = _start(
            "reconcile", "reconcile", "--os-cloud", "simulator", "--os-client-config-file", str(clouds),
            "--source-label", "simulator", "--recheck", "30", "--sweep-interval", "300",
        )
        print("[run] web views: http://127.0.0.1:6066/  (Ctrl-C stops everything this run started)", flush=True)
        loop = asyncio.new_event_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.run_until_complete(_print_operations(stop, bootstrap))
    finally:
        _stop(procs)
        if started_brokers:
            subprocess.call(["bash", str(ROOT / "stack" / "down.sh")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
