"""Traffic and worker processes for the web views' integration and browser tests.

Events are oslo messagingv2 bodies as Ironic sends them, normalized and encoded by the project's own
`pipeline.events.normalize` + `codec.encode_event` (what the bridge does), and produced with aiokafka
on the relay topics keyed by the resource UUID, murmur2-partitioned like the bridge.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from pipeline import codec, events
from tests.support.eventually import eventually

REPO = Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
PUBLISHERS = ("ironic-conductor.conductor-1", "ironic-conductor.conductor-2")
PAYLOADS = {
    "power_set": ("NodeSetPowerStatePayload", "1.17"),
    "provision_set": ("NodeSetProvisionStatePayload", "1.18"),
    "power_state_corrected": ("NodeCorrectedPowerStatePayload", "1.17"),
}


def node_body(node_uuid: str, action: str, phase: str, at: datetime, *, power: str, provision: str,
              maintenance: bool = False, publisher: str = PUBLISHERS[0], **extra: Any) -> bytes:
    name, version = PAYLOADS[action]
    data = {
        "uuid": node_uuid, "name": f"bm-{node_uuid[:8]}", "power_state": power, "provision_state": provision,
        "target_power_state": None, "target_provision_state": None, "maintenance": maintenance,
        "maintenance_reason": "web test" if maintenance else None, "last_error": None, "console_enabled": False,
        "driver": "ipmi", "resource_class": "baremetal.gpu", "extra": {}, "properties": {},
        **extra,
    }
    message = {
        "message_id": str(uuidlib.uuid4()),
        "publisher_id": publisher,
        "event_type": f"baremetal.node.{action}.{phase}",
        "priority": "ERROR" if phase == "error" else "INFO",
        "payload": {"ironic_object.name": name, "ironic_object.namespace": "ironic",
                    "ironic_object.version": version, "ironic_object.data": data},
        "timestamp": at.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "_unique_id": uuidlib.uuid4().hex,
    }
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


@dataclass
class Fleet:
    """What was sent, to compare the views with: the relay records and each node's last state."""

    prefix: str
    nodes: dict[str, dict] = field(default_factory=dict)
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # topic, key, value

    def add(self, body: bytes) -> dict:
        event = events.normalize(body, topic_prefix=self.prefix)
        self.records.append((event["topic"], event["resource_uuid"].encode(), codec.encode_event(event)))
        return event


async def produce(records: list[tuple[str, bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=KAFKA.split(","), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for topic, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def get(url: str, timeout: float = 10.0) -> tuple[int, Any, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status, headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        body, status, headers = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, orjson.loads(body), headers
    except orjson.JSONDecodeError:
        return status, body.decode(), headers


class WorkerProcess:
    """`pipeline worker` as a subprocess with its own web port; logs to a file."""

    def __init__(self, tmp: Path, app_id: str, prefix: str, port: int, *extra: str, name: str = "w") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp / f"{name}-{port}.log"
        self.args = [
            sys.executable, "-m", "pipeline", "worker",
            "--kafka-bootstrap-servers", KAFKA, "--app-id", app_id,
            "--topic-prefix", prefix, "--output-prefix", prefix + "out.", "--topic-partitions", "6",
            "--store", "memory://", "--data-dir", str(tmp / f"data-{port}"),
            "--web-host", "127.0.0.1", "--web-bind", "127.0.0.1", "--web-port", str(port),
            "--loglevel", "info", *extra,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, env: dict[str, str] | None = None) -> WorkerProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker on {self.port} exited {self.proc.returncode}:\n{self.log_tail()}")
            return get(self.url + "/readyz", timeout=2)[0] == 200

        eventually(ready, timeout, f"worker on {self.port} ready", interval=0.3, ignore=(OSError,), detail=self.log_tail)


def utc(seconds_ago: float = 0.0) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds_ago)


def mixed_fleet(prefix: str, nodes: int, seed: int = 11) -> tuple[Fleet, dict[str, int]]:
    """A fleet's last half hour: finished power operations (some failed), deploys that never ended
    (missing ends once the deadline passes), ends without a start (orphans), nodes in maintenance.
    Returns the fleet and how many events of each type it holds."""
    import random

    rng = random.Random(seed)
    fleet = Fleet(prefix)
    counts: dict[str, int] = {}

    def add(body: bytes) -> None:
        event = fleet.add(body)
        counts[event["event_type"]] = counts.get(event["event_type"], 0) + 1

    later: list[bytes] = []
    for i in range(nodes):
        bits = f"{rng.getrandbits(128):032x}"
        node = f"{bits[:8]}-{bits[8:12]}-4{bits[13:16]}-8{bits[17:20]}-{bits[20:32]}"
        publisher = PUBLISHERS[i % 2]
        power = rng.choice(("power on", "power on", "power off"))
        provision = rng.choice(("active", "active", "available", "manageable", "deploying", "clean wait"))
        maintenance = rng.random() < 0.1
        start = utc(1800 - i * 1200 / nodes)
        fleet.nodes[node] = {"power_state": power, "provision_state": provision, "maintenance": maintenance}
        add(node_body(node, "power_set", "start", start, power="power off" if power == "power on" else "power on",
                      provision=provision, maintenance=maintenance, publisher=publisher, to_power=power))
        phase = "error" if i % 20 == 7 else "end"
        took = timedelta(seconds=rng.lognormvariate(3.0, 0.8))
        add(node_body(node, "power_set", phase, start + took, power=power, provision=provision,
                      maintenance=maintenance, publisher=publisher, to_power=power))
        if i % 10 == 3:  # a deploy whose end never comes
            add(node_body(node, "provision_set", "start", start + took + timedelta(seconds=1), power=power,
                          provision=provision, maintenance=maintenance, publisher=publisher, event="deploy"))
        if i % 25 == 5:  # an end whose start was lost
            add(node_body(node, "provision_set", "end", start + took + timedelta(seconds=2), power=power,
                          provision=provision, maintenance=maintenance, publisher=publisher, event="deploy"))
        later.append(node_body(node, "power_state_corrected", "success", utc(30), power=power,
                               provision=provision, maintenance=maintenance, publisher=publisher, from_power=power))
    # the newest events move every partition's watermark past the deadlines of the lost ends
    for body in later:
        add(body)
    return fleet, counts


def feed_mixed_fleet(worker: WorkerProcess, prefix: str, nodes: int = 200) -> tuple[Fleet, dict[str, int]]:
    """`mixed_fleet` produced to `prefix`'s relay topics, returned once `worker` has processed it all."""
    fleet, counts = mixed_fleet(prefix, nodes)
    asyncio.run(produce(fleet.records))
    eventually(lambda: get(worker.url + "/api/summary")[1]["events"] >= len(fleet.records), 60,
               "every record processed", interval=0.5, detail=worker.log_tail)
    return fleet, counts
