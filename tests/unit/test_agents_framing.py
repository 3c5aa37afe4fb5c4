"""The worker reads both framings on its input: during a switch-over a relay topic holds
single-object records from the old bridge and registry-framed ones from the new, and an operation
whose start and end straddle the switch still pairs."""
from __future__ import annotations

import uuid

from pipeline import codec
from tests.support import scripted as s
from tests.unit.test_agents import POWER, PUB, Harness, h, op, power  # noqa: F401 - h is the fixture


async def test_an_operation_straddling_a_switch_to_registry_framing_pairs(h: Harness, monkeypatch) -> None:  # noqa: F811
    registered: dict[str, int] = {}
    monkeypatch.setattr(codec, "IDS", codec.SchemaIds(register=lambda subject, _s: registered.setdefault(subject, 41)))
    registry_framed = codec.Encoder("avro", "registry")
    n = str(uuid.uuid4())
    start = await h.put(power("start", n, 0, to_power="power on"))  # single-object, as before
    end = s.normalized(power("end", n, 9, power_state="power on"))
    topic, key, _, headers = s.relay(end)
    value, _ = registry_framed.event(end, topic)
    assert value[:5] == b"\x00\x00\x00\x00\x29" and registered == {f"{topic}-value": 41}
    await h.agent.put(key=key, value=value, partition=0, headers=headers)
    assert h.of("operation") == [op(n, POWER, "success", start, end, to_power="power on", prev="available",
                                    new="available", publisher=PUB)]
    assert h.rt.metrics.undecodable == 0
