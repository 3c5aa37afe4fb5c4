"""`make up` / `make down`: idempotent, and a broker we did not start is never stopped."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _make(target: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["make", "-s", target], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.integration
def test_up_twice_down_twice_leaves_foreign_brokers_running(tmp_path: Path) -> None:
    # A private Kafka on free ports (started by this `up`), next to the shared RabbitMQ on 5672
    # (already running, so this `up` must reuse it and this `down` must leave it alone).
    kafka_port, controller_port, secure_port = free_port(), free_port(), free_port()
    env = {
        "PIPELINE_STACK_DIR": str(tmp_path / "stack"),
        "KAFKA_PORT": str(kafka_port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_SECURE_PORT": str(secure_port),
    }
    assert _listening(5672)
    assert not _listening(kafka_port)

    first = _make("up", env)
    assert "Kafka: ready" in first and "RabbitMQ: something already listens" in first
    second = _make("up", env)
    assert "Kafka: something already listens" in second
    assert _listening(kafka_port)

    _make("down", env)
    assert not _listening(kafka_port), "down must stop the Kafka that up started"
    _make("down", env)
    assert _listening(5672), "down must never stop a broker it did not start"
    assert _listening(9092)
