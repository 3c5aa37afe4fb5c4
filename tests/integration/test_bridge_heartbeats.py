"""The bridge's heartbeats on the real brokers: one in every partition of every relay topic while it
is caught up; while a RabbitMQ backlog drains (prefetch 1, so slowly) only the held time is repeated;
and in each partition no notification older than a heartbeat's time comes after that heartbeat."""
from __future__ import annotations

import collections
import time
from datetime import datetime
from pathlib import Path

import pytest

from pipeline import codec
from pipeline.bridge.relay import catalog_topics
from tests.support.bridge import (
    amqp_bridge,
    cleanup_amqp,
    delete_topics,
    is_heartbeat,
    publish_mixed,
    read_all,
    run,
)

pytestmark = pytest.mark.integration

N = 80  # at prefetch 1 and linger 100 ms the bridge relays under 10 a second: a backlog of seconds
PARTITIONS = 3
# a notification's timestamp is taken by the publisher before it reaches RabbitMQ; one still on its
# way when the bridge asked for its queue's depth may land just after a heartbeat (the lateness
# setting of the workers covers this and clock skew)
IN_TRANSIT_S = 1.0


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def test_heartbeats_vouch_only_for_what_is_relayed(tmp_path: Path, unique: str) -> None:
    queue, prefix = f"bridge-hb-{unique}", f"t{unique}."
    bridge = amqp_bridge(queue, prefix, unique, "--heartbeat-interval", "1", "--amqp-prefetch", "1",
                         "--kafka-linger-ms", "100", "--bridge-id", f"hb-{unique}", log=tmp_path / "bridge.log").start()
    try:
        bridge.wait_for_log("heartbeats every")
        bridge.wait_for_log("RabbitMQ connected")
        time.sleep(3.0)  # caught up: a few rounds of heartbeats first
        started = time.monotonic()
        publish_mixed(N, unique)
        records = run(read_all(prefix, N, timeout=120, settle_s=3.0, heartbeats=True))
        drained_s = time.monotonic() - started
        assert bridge.stop() == 0
    finally:
        bridge.stop()
        run(cleanup_amqp(queue, unique))
        run(delete_topics(prefix))

    by_partition = collections.defaultdict(list)
    for r in records:
        if not r.topic.endswith("deadletter"):
            by_partition[(r.topic, r.partition)].append(r)
    relay_topics = [t for t in catalog_topics(prefix) if not t.endswith("deadletter")]
    expected = {(t, p) for t in relay_topics for p in range(PARTITIONS)}
    assert set(by_partition) == expected, "a heartbeat in every partition of every relay topic"

    held = caught_up = violations = 0
    notifications = 0
    for lane, recs in by_partition.items():
        recs.sort(key=lambda r: r.offset)
        vouched = None  # the newest time a heartbeat read so far on this lane vouched for
        for r in recs:
            event = codec.decode_event(r.value)
            if is_heartbeat(r):
                assert r.key is None and event["event_type"] == "pipeline.heartbeat"
                assert event["payload"]["bridge"] == f"hb-{unique}" and event["payload"]["partition"] == r.partition
                if event["payload"]["caught_up"]:
                    caught_up += 1
                else:
                    held += 1
                    # a held heartbeat repeats the last caught-up time, it never moves it
                    assert vouched is not None and _ts(event) <= vouched
                vouched = max(vouched or 0.0, _ts(event))
            else:
                notifications += 1
                if vouched is not None and _ts(event) < vouched - IN_TRANSIT_S:
                    violations += 1
        last = codec.decode_event(recs[-1].value)
        assert is_heartbeat(recs[-1]) and last["payload"]["caught_up"], f"{lane}: caught up at the end"
    print(f"\n{N} notifications drained in {drained_s:.1f}s; heartbeats: {caught_up} caught up, {held} held "
          f"over {len(expected)} partitions")
    assert notifications == N
    assert violations == 0, f"{violations} notifications older than a heartbeat before them"
    assert held >= len(expected), "the backlog lasted at least one interval: held heartbeats in every partition"
