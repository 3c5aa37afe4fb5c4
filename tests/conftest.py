"""Shared test settings. Integration tests run against the brokers `make up` starts; when one is
not listening they fail with that reason rather than skip, so CI cannot pass without them."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _listening(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _brokers_for_integration(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration") is None:
        return
    for name, hostport in (("Kafka", KAFKA.split(",")[0]), ("RabbitMQ", "127.0.0.1:5672")):
        if not _listening(hostport):
            pytest.fail(f"{name} is not listening on {hostport}: run `make up`")


@pytest.fixture
def unique() -> str:
    """A suffix that keeps topics, queues and groups of one test apart from every other run."""
    return uuid.uuid4().hex[:10]
