"""Acceptance 4: an hour of events already waiting in Kafka, read in a few seconds, raises no
missing_end for operations whose ends are in the backlog (deadlines follow event time), while the
few operations whose ends really are missing still get theirs."""
from __future__ import annotations

import collections
import random
import time
import uuid

import pytest

import tests.support.worker as ws
from tests.support import scripted as s

pytestmark = pytest.mark.integration

POWER = "baremetal.node.power_set"
PROVISION = "baremetal.node.provision_set"


def test_replaying_an_hour_of_backlog_raises_no_false_missing_end(tmp_path) -> None:
    names = ws.Names()
    ws.create_relay_topics(names)
    rng = random.Random(4)
    nodes = [str(uuid.uuid4()) for _ in range(500)]
    timeline: list[tuple[float, int, bytes]] = []
    ops = 0
    dropped: set[str] = set()
    for i, n in enumerate(nodes):
        t = rng.uniform(0, 300)
        power = "power off"
        actions = []
        while t < 3600 - 600:
            # a power action: the end comes 5-280 s later, always before the 300 s deadline
            power = "power on" if power == "power off" else "power off"
            duration = rng.uniform(5, 280)
            actions.append((t, duration, power))
            t += duration + rng.uniform(60, 900)
        for j, (t, duration, power) in enumerate(actions):
            timeline.append((t, len(timeline), s.ironic_body(f"{POWER}.start", n, s.at(t), to_power=power)))
            if i % 97 == 0 and j == len(actions) - 1:
                dropped.add(n)  # the node's last end is lost on the way (an earlier one would be superseded)
                continue
            timeline.append((t + duration, len(timeline), s.ironic_body(f"{POWER}.end", n, s.at(t + duration),
                                                                        power_state=power)))
            ops += 1
        # a few nodes also deploy: 20-40 minutes, well inside the 4 h provision deadline
        if i % 50 == 1:
            t0 = rng.uniform(0, 1200)
            timeline.append((t0, len(timeline), s.ironic_body(f"{PROVISION}.start", n, s.at(t0),
                                                              provision_state="deploying", event="deploy")))
            t1 = t0 + rng.uniform(1200, 2400)
            timeline.append((t1, len(timeline), s.ironic_body(f"{PROVISION}.end", n, s.at(t1),
                                                              provision_state="active")))
            ops += 1
    timeline.sort()
    bodies = [b for _, _, b in timeline] + ws.tick_bodies(3600, ws.tick_nodes())
    total = ws.produce(bodies, names)
    assert total > 5000

    started = time.monotonic()
    proc = ws.worker(names, tmp_path, "a", "--store", "memory://", "--lateness", "60",
                     "--stuck-after", "7200", "--stop-after", str(total))
    assert proc.wait(300) == 0  # a bound against a hang, not a speed: the machine may be shared and slow
    elapsed = time.monotonic() - started
    t = names.topics()
    alerts = [v for _, v, _ in ws.read(t.alerts)]
    kinds = collections.Counter(a["kind"] for a in alerts)
    assert kinds == {"missing_end": len(dropped)}, kinds
    assert {a["resource_uuid"] for a in alerts} == dropped
    records = [v for _, v, _ in ws.read(t.operations)]
    assert len(records) == ops
    assert not any(r["late"] for r in records)
    print(f"\nan hour of backlog ({total:,} records) in {elapsed:.0f} s")
