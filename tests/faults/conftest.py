"""Fixtures of the fault suite: one private Kafka + RabbitMQ for the whole session (a fault may stop
or restart them; the shared brokers on 9092/5672 serve teammates' tests and are never touched), the
fleet's capture, and the derived outputs of a fault-free run of that capture."""
from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest

from tests.support.faults import (
    Broker,
    Derived,
    Pipeline,
    account,
    capture,
    caught_up,
    derived,
)
from tests.support.private_stack import PrivateStack

FIGURES: list[str] = []  # one line per scenario, printed at the end of the session


def _running_stack(path: str) -> PrivateStack:
    """A private stack already running (FAULTS_STACK=<json with its env>), for quick reruns."""
    env = json.loads(Path(path).read_text())["env"]
    stack = PrivateStack.__new__(PrivateStack)
    stack.env = {**os.environ, **env}
    stack.kafka_port, stack.amqp_port = int(env["KAFKA_PORT"]), int(env["AMQP_PORT"])
    stack.kafka_bootstrap = f"127.0.0.1:{stack.kafka_port}"
    stack.amqp_url = f"amqp://guest:guest@127.0.0.1:{stack.amqp_port}/"
    return stack


@pytest.fixture(scope="session")
def private_stack(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("FAULTS_STACK"):
        yield _running_stack(os.environ["FAULTS_STACK"])
        return
    stack = PrivateStack(tmp_path_factory.mktemp("faults-stack"), f"faults{uuid.uuid4().hex[:6]}")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _private_stack_up(request: pytest.FixtureRequest) -> None:
    """A scenario that restarts a broker may leave it down when it fails: start what is not listening
    (up.sh reuses a broker that listens), so one failure does not fail every later scenario."""
    if "private_stack" in request.fixturenames:
        request.getfixturevalue("private_stack").start()


@pytest.fixture(scope="session")
def broker(private_stack: PrivateStack) -> Broker:
    return Broker(private_stack.kafka_bootstrap, private_stack.amqp_url,
                  private_stack.env["RABBITMQ_NODENAME"])


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The capture file and the message_ids it holds, in order."""
    path = tmp_path_factory.mktemp("fleet") / "capture.jsonl"
    ids = capture(path)
    assert len(ids) == len(set(ids)) > 2000 and None not in ids
    return path, ids


@pytest.fixture(scope="session")
def reference(broker: Broker, fleet, tmp_path_factory: pytest.TempPathFactory) -> Derived:
    """The fleet through the pipeline without any fault: the file source, the bridge, a worker."""
    return asyncio.run(_reference(broker, fleet, tmp_path_factory.mktemp("reference")))


async def _reference(broker: Broker, fleet, data_dir: Path) -> Derived:
    path, ids = fleet
    p = Pipeline(broker, data_dir)
    bridge = p.bridge("--source", f"file:{path}")
    p.worker()
    try:
        assert await bridge.exited(120) == 0, bridge.tail()
        acc = await account(broker.kafka, p.names.topic_prefix, ids)
        assert not acc.missing and acc.duplicates == 0, acc.line()
        await caught_up(p)
        ref = await derived(broker.kafka, p.names.output_prefix)
        assert not p.crashed(), p.crashed()
    finally:
        await p.stop()
        await p.cleanup()
    assert len(ref.operations) > 1000 and ref.nodes, ref.summary()
    FIGURES.append(f"reference (no fault): {acc.line()}; derived {ref.summary()}")
    return ref


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
