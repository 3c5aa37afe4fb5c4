"""Acceptance 2 and 3 of the bridge: SIGKILL during a relay, and Kafka stopped for 20 seconds.

The Kafka outage uses a private Kafka (stack/up.sh with its own state dir and ports): the shared
broker on 9092 serves the teammates' tests and is never stopped.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.bridge import (
    ROOT,
    amqp_bridge,
    check_all_relayed,
    cleanup_amqp,
    delete_topics,
    publish_mixed,
    queue_depth,
    read_all,
    run,
)
from tests.support.eventually import eventually
from tests.support.ports import free_block

pytestmark = pytest.mark.integration

KILL_N = int(os.environ.get("BRIDGE_KILL_TEST_MESSAGES", "20000"))
OUTAGE_N = int(os.environ.get("BRIDGE_OUTAGE_TEST_MESSAGES", "6000"))
OUTAGE_S = float(os.environ.get("BRIDGE_OUTAGE_S", "20"))
# a free block (plain, controller, SASL_SSL) unless set: a fixed port clashes with a second suite running
PRIVATE_KAFKA_PORT = int(os.environ.get("BRIDGE_TEST_KAFKA_PORT") or free_block(3))


class PublishInBackground(threading.Thread):
    def __init__(self, n: int, unique: str) -> None:
        super().__init__(daemon=True)
        self.n, self.unique = n, unique
        self.sent: list = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sent = publish_mixed(self.n, self.unique)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_sigkill_three_times_during_relay(tmp_path: Path, unique: str) -> None:
    queue, prefix = f"bridge-test-{unique}", f"t{unique}."
    log = tmp_path / "bridge.log"
    bridge = amqp_bridge(queue, prefix, unique, "--no-precreate-topics", log=log).start()
    publisher = PublishInBackground(KILL_N, unique)
    kills = []
    try:
        bridge.wait_for_log("RabbitMQ connected")
        publisher.start()
        for i in range(3):
            bridge.wait_for_log("topic created" if i == 0 else "RabbitMQ connected", count=1 if i == 0 else i + 1)
            time.sleep(1.5)
            assert publisher.is_alive(), "the relay should still be going when the bridge is killed"
            bridge.kill(signal.SIGKILL)
            assert bridge.wait(10) == -signal.SIGKILL
            kills.append(time.monotonic())
            bridge = amqp_bridge(queue, prefix, unique, "--no-precreate-topics", log=log).start()
        publisher.join(300)
        assert publisher.error is None, publisher.error
        records = run(read_all(prefix, KILL_N, timeout=180))
        eventually(lambda: run(queue_depth(queue)) == 0, 30, f"queue {queue} drained", interval=0.5)
    finally:
        bridge.stop()
        run(cleanup_amqp(queue, unique))
    duplicates = check_all_relayed(records, KILL_N)
    print(f"\n{KILL_N} notifications, 3 SIGKILLs: all in Kafka, {duplicates} duplicate records")
    run(delete_topics(prefix))


# --- Kafka away for 20 seconds --------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory):
    if not shutil.which("java"):
        pytest.fail("Java is needed for the private Kafka of the outage test")
    state = tmp_path_factory.mktemp("private-kafka")
    env = {**os.environ, "PIPELINE_STACK_DIR": str(state), "KAFKA_PORT": str(PRIVATE_KAFKA_PORT),
           "KAFKA_CONTROLLER_PORT": str(PRIVATE_KAFKA_PORT + 1)}

    def up() -> None:
        subprocess.run(["bash", "stack/up.sh"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=180)

    def down() -> None:
        subprocess.run(["bash", "stack/down.sh"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)

    up()
    try:
        yield f"127.0.0.1:{PRIVATE_KAFKA_PORT}", up, down
    finally:
        down()


def test_kafka_stopped_for_20_seconds(tmp_path: Path, unique: str, private_kafka) -> None:
    kafka, kafka_up, kafka_down = private_kafka
    queue, prefix = f"bridge-test-{unique}", f"t{unique}."
    prefetch = 500
    bridge = amqp_bridge(queue, prefix, unique, "--amqp-prefetch", str(prefetch), kafka=kafka,
                         log=tmp_path / "bridge.log").start()
    publisher = PublishInBackground(OUTAGE_N, unique)
    rss_kb: list[int] = []
    try:
        bridge.wait_for_log("RabbitMQ connected")
        publisher.start()
        time.sleep(1.0)
        kafka_down()
        stopped = time.monotonic()
        depth_while_down = 0
        while time.monotonic() - stopped < OUTAGE_S:
            assert bridge.proc.poll() is None, "the bridge must survive Kafka going away"
            rss_kb.append(bridge.rss_kb())
            depth_while_down = max(depth_while_down, run(queue_depth(queue)))
            time.sleep(0.5)
        kafka_up()
        publisher.join(300)
        assert publisher.error is None, publisher.error
        records = run(read_all(prefix, OUTAGE_N, timeout=180, kafka=kafka))
        assert bridge.proc.poll() is None
        rss_kb.append(bridge.rss_kb())
        assert bridge.stop() == 0
    finally:
        bridge.stop()
        run(cleanup_amqp(queue, unique))
    duplicates = check_all_relayed(records, OUTAGE_N)
    log = (tmp_path / "bridge.log").read_text()
    assert "Kafka has acknowledged nothing" in log and "Kafka acknowledging again" in log, log
    # it stopped consuming: the messages waited in RabbitMQ, not in the bridge's memory
    assert depth_while_down > prefetch, depth_while_down
    peak = max(rss_kb) / 1024
    print(f"\n{OUTAGE_N} notifications, Kafka down {OUTAGE_S:.0f} s: all in Kafka, {duplicates} duplicates; "
          f"queue depth while down up to {depth_while_down}; bridge RSS {min(rss_kb) / 1024:.0f}-{peak:.0f} MB")
    assert peak < 250, f"bridge RSS {peak:.0f} MB"


# --- RabbitMQ closes the bridge's connection ------------------------------------------------------


def rabbitmqctl(*args: str) -> str:
    node = (ROOT / ".stack" / "rabbitmq.node")
    name = node.read_text().strip() if node.exists() else "rabbit@localhost"
    cmd = ["rabbitmqctl", "-n", name, "-q", *args]
    if os.geteuid() != 0:
        cmd = ["sudo", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout


def close_consumer_connections(queue: str) -> int:
    """Close, on the broker side, the connections consuming `queue` (only the test's own bridge)."""
    channels = {line.split("\t")[1] for line in rabbitmqctl("list_consumers", "queue_name", "channel_pid").splitlines()
                if line.startswith(queue + "\t")}
    connections = {line.split("\t")[1] for line in rabbitmqctl("list_channels", "pid", "connection").splitlines()
                   if line.split("\t")[0] in channels}
    for pid in connections:
        rabbitmqctl("close_connection", pid, "bridge test: connection closed by the broker")
    return len(connections)


def test_amqp_connection_lost_mid_relay(tmp_path: Path, unique: str) -> None:
    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl is not on PATH (RabbitMQ not started by make up here)")
    n = 4000
    queue, prefix = f"bridge-test-{unique}", f"t{unique}."
    bridge = amqp_bridge(queue, prefix, unique, "--no-precreate-topics", log=tmp_path / "bridge.log").start()
    publisher = PublishInBackground(n, unique)
    try:
        bridge.wait_for_log("RabbitMQ connected")
        publisher.start()
        time.sleep(1.0)
        assert publisher.is_alive()
        assert close_consumer_connections(queue) == 1
        bridge.wait_for_log("RabbitMQ connected", count=2, timeout=60)
        publisher.join(300)
        assert publisher.error is None, publisher.error
        records = run(read_all(prefix, n, timeout=120))
        eventually(lambda: run(queue_depth(queue)) == 0, 30, f"queue {queue} drained", interval=0.5)
        assert bridge.proc.poll() is None
    finally:
        bridge.stop()
        run(cleanup_amqp(queue, unique))
    log = (tmp_path / "bridge.log").read_text()
    assert "RabbitMQ connection lost" in log or "RabbitMQ channel closed" in log, log
    duplicates = check_all_relayed(records, n)
    print(f"\n{n} notifications, AMQP connection closed by the broker mid-relay: all in Kafka, "
          f"{duplicates} duplicates")
    run(delete_topics(prefix))
