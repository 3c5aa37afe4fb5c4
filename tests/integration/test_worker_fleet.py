"""Acceptance 2: a scripted stream of 1,000 nodes on the real Kafka, with a known set of dropped,
delayed and duplicated `.end` events (and ends that overtake their start), produces exactly the
expected operations, node states and alerts, no more and no fewer."""
from __future__ import annotations

import collections
import random
import uuid

import pytest

import tests.support.worker as ws
from pipeline.streams.operations import output_id
from tests.support import scripted as s

pytestmark = pytest.mark.integration

POWER = "baremetal.node.power_set"
NODES = 1000


def test_a_thousand_nodes_with_dropped_delayed_and_duplicated_ends(tmp_path) -> None:
    names = ws.Names()
    ws.create_relay_topics(names)
    rng = random.Random(5)
    nodes = [str(uuid.uuid4()) for _ in range(NODES)]
    kind = {n: ("normal", "dropped", "delayed", "duplicated", "race")[i % 5] if i % 10 >= 5 else "normal"
            for i, n in enumerate(nodes)}
    # per kind: half the nodes are normal, the other half split in five kinds of 100
    timeline: list[tuple[float, int, bytes]] = []  # (send time, seq, body); sent in that order
    late_ends: list[bytes] = []
    expected_ops: dict[str, dict] = {}
    expected_missing: set[str] = set()
    expected_late: set[str] = set()
    final_power: dict[str, str] = {}
    seq = 0

    def at(t: float, body: bytes) -> None:
        nonlocal seq
        seq += 1
        timeline.append((t, seq, body))

    for i, n in enumerate(nodes):
        t0 = i * 0.5
        start_id, end_id = str(uuid.uuid4()), str(uuid.uuid4())
        duration = rng.uniform(2, 120)
        start = s.ironic_body(f"{POWER}.start", n, s.at(t0), message_id=start_id, to_power="power on")
        end = s.ironic_body(f"{POWER}.end", n, s.at(t0 + duration), message_id=end_id, power_state="power on")
        k = kind[n]
        if k == "dropped":
            at(t0, start)
            expected_missing.add(start_id)
            final_power[n] = "power off"
            continue
        final_power[n] = "power on"
        expected_ops[output_id("operation", n, POWER, start_id, end_id)] = {
            "start": start_id, "end": end_id, "late": k == "delayed", "duration_ms": int(duration * 1000)}
        if k == "delayed":  # the end arrives after the watchdog had to give up on it
            at(t0, start)
            late_ends.append(s.ironic_body(f"{POWER}.end", n, s.at(t0 + 400), message_id=end_id,
                                           power_state="power on"))
            expected_ops[output_id("operation", n, POWER, start_id, end_id)]["duration_ms"] = 400_000
            expected_missing.add(start_id)
            expected_late.add(start_id)
        elif k == "duplicated":  # the bridge relayed both twice (RabbitMQ redelivery)
            at(t0, start)
            at(t0 + 0.1, start)
            at(t0 + duration, end)
            at(t0 + duration + 0.1, end)
        elif k == "race":  # Ironic's race: the end is sent before the start
            at(t0 - 0.01, s.ironic_body(f"{POWER}.end", n, s.at(t0 + 0.2), message_id=end_id,
                                        power_state="power on"))
            at(t0, start)
            expected_ops[output_id("operation", n, POWER, start_id, end_id)]["duration_ms"] = 200
        else:
            at(t0, start)
            at(t0 + duration, end)
    timeline.sort()
    ticks = ws.tick_nodes()
    bodies = [b for _, _, b in timeline]
    bodies += ws.tick_bodies(2000, ticks)  # every partition's watermark passes every deadline
    bodies += late_ends
    bodies += ws.tick_bodies(3000, ticks)
    total = ws.produce(bodies, names)

    proc = ws.worker(names, tmp_path, "a", "--store", "memory://", "--deadline", f"{POWER}=300",
                     "--lateness", "60", "--orphan-grace", "120", "--stop-after", str(total))
    assert proc.wait(90) == 0
    t = names.topics()

    ops = [v for _, v, _ in ws.read(t.operations)]
    assert len(ops) == len(expected_ops), "one record per finished operation"
    by_id = {o["op_id"]: o for o in ops}
    assert set(by_id) == set(expected_ops)
    for op_id, want in expected_ops.items():
        got = by_id[op_id]
        assert (got["start_message_id"], got["end_message_id"], got["late"], got["outcome"]) == \
            (want["start"], want["end"], want["late"], "success")
        assert got["duration_ms"] == want["duration_ms"]
        assert got["to_power"] == "power on" and got["operation"] == POWER

    alerts = [v for _, v, _ in ws.read(t.alerts)]
    kinds = collections.Counter(a["kind"] for a in alerts)
    assert kinds == {"missing_end": len(expected_missing), "resolved_late": len(expected_late)}
    assert {a["message_id"] for a in alerts if a["kind"] == "missing_end"} == expected_missing
    assert {a["alert_id"] for a in alerts if a["kind"] == "resolved_late"} == \
        {output_id("resolved_late", a["resource_uuid"], POWER, a_start)
         for a in alerts if a["kind"] == "missing_end" for a_start in [a["message_id"]] if a_start in expected_late}
    assert len({a["alert_id"] for a in alerts}) == len(alerts)

    states = ws.latest_by_key(ws.read(t.node_state))
    for n in nodes:
        st = states[n.encode()]
        assert st["power_state"] == final_power[n], (n, kind[n])
        assert st["node_uuid"] == n and st["provision_state"] == "available"

    summary = ws.summary(tmp_path)
    assert summary["duplicates"] == 2 * 100  # start and end of the 100 duplicated nodes
    assert summary["events"] == total
