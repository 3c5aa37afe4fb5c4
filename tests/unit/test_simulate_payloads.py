"""The simulator's messages against the real thing: oslo's own rabbit driver (byte for byte), the
verbatim wire captures of tests/fixtures (structure), and `pipeline inspect` (no error)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import kombu
import pytest

from pipeline import events
from pipeline.simulate import outputs, payloads
from pipeline.simulate.command import unique_id
from pipeline.simulate.faults import Faults
from pipeline.simulate.fleet import Fleet
from pipeline.simulate.model import Event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
START = datetime(2026, 11, 22, 0, 0, 0)


def _inner(body: bytes | str) -> dict:
    outer = json.loads(body)
    return json.loads(outer["oslo.message"]) if "oslo.message" in outer else outer


def _research() -> dict[tuple[str, str], dict]:
    """Verbatim wire captures of the rabbit driver by (event_type, priority); the
    Kafka-driver record and the v1 `test.v1` example are about drivers, not services' payloads."""
    found = {}
    for line in (FIXTURES / "research_bodies.jsonl").read_text().splitlines():
        inner = _inner(line)
        if "_unique_id" in inner and not inner["event_type"].startswith("test."):
            found[(inner["event_type"], inner["priority"])] = inner
    return found


def _stream(nodes: int = 300, images: int = 150, count: int = 10000, seed: int = 11) -> Iterator[Event]:
    fleet = Fleet(nodes, images, seed=seed, start=START, think_s=900.0)
    n = 0
    for event in fleet.events():
        n += 1
        if n == count:
            fleet.close()
        yield event
    yield from fleet.sweep()


@pytest.fixture(scope="module")
def sample() -> list[Event]:
    return list(_stream())


def _types(value: object) -> str:
    return "null" if value is None else type(value).__name__


def test_every_catalog_life_event_appears(sample: list[Event]) -> None:
    seen = {e.event_type for e in sample}
    for needed in ("baremetal.node.create.start", "baremetal.node.create.end", "baremetal.node.delete.end",
                   "baremetal.node.power_set.start", "baremetal.node.power_set.end",
                   "baremetal.node.power_set.error", "baremetal.node.provision_set.start",
                   "baremetal.node.provision_set.success", "baremetal.node.provision_set.end",
                   "baremetal.node.provision_set.error", "baremetal.node.maintenance_set.start",
                   "baremetal.node.maintenance_set.end", "baremetal.node.power_state_corrected.success",
                   "baremetal.port.create.end", "baremetal.port.delete.end", "baremetal.port.update.end",
                   "baremetal.portgroup.create.end", "baremetal.portgroup.delete.end", "baremetal.node.update.end",
                   "image.create", "image.prepare", "image.upload", "image.activate", "image.send",
                   "image.update", "image.delete", "image.member.create", "image.member.update",
                   "task.create", "task.run", "task.processing", "task.success"):
        assert needed in seen, needed
    assert any(e.event_type == "image.upload" and e.priority == "ERROR" and isinstance(e.payload, str)
               for e in sample)


@pytest.mark.parametrize("key", sorted(_research()), ids=lambda k: f"{k[0]}:{k[1]}")
def test_structure_matches_the_research_examples(sample: list[Event], key: tuple[str, str]) -> None:
    event_type, priority = key
    real = _research()[key]
    ours = [e for e in sample if e.event_type == event_type and e.priority == priority]
    assert ours, f"the simulator never sends {event_type} at {priority}"
    for event in ours[:50]:
        inner = _inner(outputs.render(event, unique_id(event.message_id))[0])
        # the same top-level keys: message fields, _unique_id, and _context_* exactly when the real one has them
        assert set(inner) == set(real), set(inner) ^ set(real)
        assert inner["priority"] == real["priority"]
        assert uuid.UUID(inner["message_id"]) and len(inner["_unique_id"]) == 32
        datetime.strptime(inner["timestamp"], "%Y-%m-%d %H:%M:%S.%f" if "." in inner["timestamp"]
                          else "%Y-%m-%d %H:%M:%S")
        assert inner["publisher_id"].split(".")[0] == real["publisher_id"].split(".")[0]
        theirs, mine = real["payload"], inner["payload"]
        assert type(mine) is type(theirs)
        if isinstance(theirs, dict) and "ironic_object.data" in theirs:
            for meta in ("ironic_object.name", "ironic_object.namespace", "ironic_object.version"):
                assert mine[meta] == theirs[meta], meta
            theirs, mine = theirs["ironic_object.data"], mine["ironic_object.data"]
        if isinstance(theirs, dict):
            assert set(mine) == set(theirs), set(mine) ^ set(theirs)
            for k, v in theirs.items():
                if v is not None and mine[k] is not None:
                    assert _types(mine[k]) == _types(v), (k, mine[k], v)


def test_port_payload_matches_the_research_example(sample: list[Event]) -> None:
    real = {"ironic_object.name": "PortCRUDPayload", "ironic_object.namespace": "ironic", "ironic_object.version": "1.8",
            "keys": {"address", "extra", "local_link_connection", "pxe_enabled", "node_uuid", "portgroup_uuid",
                     "physical_network", "created_at", "updated_at", "uuid", "is_smartnic", "name", "description",
                     "vendor", "category", "available_for_dynamic_portgroup"}}
    ports = [e for e in sample if e.event_type == "baremetal.port.create.end"]
    assert ports
    for event in ports:
        assert {k: event.payload[k] for k in real if k != "keys"} == {k: v for k, v in real.items() if k != "keys"}
        assert set(event.payload["ironic_object.data"]) == real["keys"]
        assert event.payload["ironic_object.data"]["created_at"].endswith("Z")


def test_ironic_payload_versions_are_current() -> None:
    assert payloads.IRONIC_VERSIONS == {
        "NodePayload": "1.17", "NodeSetPowerStatePayload": "1.17", "NodeCorrectedPowerStatePayload": "1.17",
        "NodeSetProvisionStatePayload": "1.18", "NodeCRUDPayload": "1.15", "PortCRUDPayload": "1.8",
        "PortgroupCRUDPayload": "1.3",
    }


def test_every_message_normalizes(sample: list[Event]) -> None:
    for event in sample:
        body, _, _ = outputs.render(event, unique_id(event.message_id))
        normalized = events.normalize(body)
        assert normalized["event_type"] == event.event_type
        if event.op is not None and event.op.end_anonymous and event.role == "error":
            assert normalized["resource_uuid"] is None  # a store error text names no image
            continue
        assert normalized["resource_uuid"], event.event_type
        if event.op is not None and event.role in ("start", "end", "error"):
            assert normalized["operation"] == event.op.operation
            assert normalized["phase"] == event.role
            assert normalized["resource_uuid"] == event.op.resource_uuid


def test_pipeline_inspect_accepts_the_simulator_output(tmp_path: Path) -> None:
    """Acceptance 3: the stdout output through `pipeline inspect`, every line accepted (exit 0)."""
    simulate = subprocess.run(
        [sys.executable, "-m", "pipeline", "simulate", "--output", "stdout", "--rate", "0", "--nodes", "200",
         "--images", "30", "--events", "3000", "--seed", "5", "--loss", "0.05", "--duplicates", "0.05",
         "--reorder", "5", "--quiet"], capture_output=True, timeout=120, check=True)
    lines = simulate.stdout.splitlines()
    assert len(lines) > 3000
    inspect = subprocess.run([sys.executable, "-m", "pipeline", "inspect"], input=simulate.stdout,
                             capture_output=True, timeout=120)
    results = [json.loads(line) for line in inspect.stdout.splitlines()]
    assert len(results) == len(lines)
    assert [r for r in results if "error" in r] == []
    assert inspect.returncode == 0


def test_wire_body_is_what_oslos_rabbit_driver_publishes(sample: list[Event]) -> None:
    """`--output stdout|kafka` bodies == the bytes oslo's driver publishes for the same message
    (oslo's rabbit driver on kombu's in-memory transport, the way oslo's own tests run it)."""
    topics = outputs.Topics(ironic=f"sim-{uuid.uuid4().hex}", glance=f"sim-{uuid.uuid4().hex}")
    rabbit = outputs.RabbitOutput("kombu+memory:////", topics)
    picks = {}
    for event in sample:
        picks.setdefault((event.event_type, event.priority), event)

    async def send_all() -> None:
        await rabbit.start()
        for event in picks.values():
            await rabbit.send(event, "ignored: the driver makes its own")

    asyncio.run(send_all())
    try:
        with kombu.Connection("memory://") as conn:
            for event in picks.values():
                routing_key = f"{topics.topic(event.service)}.{event.priority.lower()}"
                queue = conn.SimpleQueue(routing_key)
                try:
                    message = queue.get(timeout=5)
                    message.ack()
                finally:
                    queue.close()
                body = message.body.encode() if isinstance(message.body, str) else message.body
                inner = _inner(body)
                assert inner["message_id"] == event.message_id, "messages of one routing key arrive in order"
                ours = outputs.render(event, inner["_unique_id"], topics)[0]
                assert ours == body, event.event_type
    finally:
        asyncio.run(rabbit.close())


def test_duplicates_keep_the_message_id_and_unique_id() -> None:
    fleet = Fleet(50, 5, seed=3, start=START)
    faults = Faults(duplicates=0.3, seed=3)
    seen: dict[str, bytes] = {}
    copies = 0
    for n, event in enumerate(faults.apply(fleet.events())):
        body = outputs.render(event, unique_id(event.message_id))[0]
        if event.message_id in seen:
            copies += 1
            assert seen[event.message_id] == body
        seen[event.message_id] = body
        if n == 2000:
            fleet.close()
    assert copies == faults.counts["duplicated"] > 100
