"""The simulator's stand-in for Ironic's and Glance's read APIs (pipeline/simulate/api.py), asked through
the reconciler's own openstacksdk shell: it answers from the fleet's records, as they are at the time."""
from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path

from pipeline import observed
from pipeline.reconcile import api as api_mod
from pipeline.simulate.api import serve
from pipeline.simulate.fleet import Fleet
from tests.support.ports import free_port


async def test_it_answers_what_the_fleet_knows(tmp_path: Path) -> None:
    fleet = Fleet(12, 4, seed=3, start=datetime(2026, 11, 22, tzinfo=UTC), think_s=60)
    for _ in itertools.islice(fleet.events(), 400):  # the fleet moves on: some nodes mid-operation
        pass
    port = free_port()
    runner = await serve(fleet, port)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(f"clouds:\n  sim:\n    auth_type: none\n    baremetal_endpoint_override: http://127.0.0.1:{port}/v1\n"
                      f"    image_endpoint_override: http://127.0.0.1:{port}/v2\n")
    try:
        api = await asyncio.to_thread(lambda: api_mod.Api(api_mod.connect("sim", str(clouds), 5.0), 5.0))
        node = fleet.nodes[0]
        got = await asyncio.to_thread(api.get, "baremetal.node", node.uuid)
        assert (got["provision_state"], got["target_provision_state"], got["power_state"]) == (
            node.provision_state, node.target_provision_state, node.power_state)
        assert observed.read(observed.observation("baremetal.node", node.uuid, got, observed_at=datetime.now(UTC),
                                                  about="x", source="simulator")).updated_us is not None
        assert await asyncio.to_thread(api.get, "baremetal.node", "00000000-0000-0000-0000-000000000000") is None

        seen, marker = [], None
        while True:
            page, marker = await asyncio.to_thread(api.nodes_page, marker, 5)
            seen += [n["uuid"] for n in page]
            if marker is None:
                break
        assert sorted(seen) == sorted(n.uuid for n in fleet.nodes)

        image = fleet.images[0]
        answer = await asyncio.to_thread(api.get, "image", image.id)
        assert (answer["id"], answer["status"]) == (image.id, image.status)
        if fleet.tasks:
            task = next(iter(fleet.tasks.values()))
            assert (await asyncio.to_thread(api.get, "task", task.id))["status"] == task.status
    finally:
        await runner.cleanup()
