"""A private Kafka and RabbitMQ on free ports, for tests that stop or restart a broker: the shared
brokers of `make up` serve every other test at the same time and must never be touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.ports import free_block

ROOT = Path(__file__).resolve().parents[2]


class PrivateStack:
    def __init__(self, state_dir: Path, name: str) -> None:
        base = free_block(10)
        # Kafka B, its controller B+1, SASL_SSL B+2; RabbitMQ TLS B+4, AMQP B+5, distribution B+6;
        # schema registry B+7, its health port B+8
        self.kafka_port, self.amqp_port, self.registry_port = base, base + 5, base + 7
        self.env = {
            **os.environ,
            "PIPELINE_STACK_DIR": str(state_dir),
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(base + 1),
            "KAFKA_SECURE_PORT": str(base + 2),
            "AMQP_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(base + 6),
            "RABBITMQ_NODENAME": f"rabbit-{name}@localhost",
            "REGISTRY_PORT": str(self.registry_port),
            "REGISTRY_MANAGEMENT_PORT": str(base + 8),
        }
        self.kafka_bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    def _run(self, script: str, *brokers: str) -> None:
        done = subprocess.run(["bash", str(ROOT / "stack" / script), *brokers], env=self.env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"stack/{script} {' '.join(brokers)} failed: {done.stdout}{done.stderr}")

    def start(self, *brokers: str) -> None:
        """Start `kafka`, `rabbitmq`, `registry`; kafka and rabbitmq when none is named."""
        self._run("up.sh", *brokers)

    def stop(self, *brokers: str) -> None:
        self._run("down.sh", *brokers)

    def __enter__(self) -> PrivateStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
