"""Secure connections, configured the way production is: the bridge reads RabbitMQ over TLS (a
virtual host, a password user) and writes Kafka over SASL_SSL with SCRAM-SHA-512; the worker reads
the same listener. Credentials come from files, as Kubernetes mounts Secrets. The certificates and
passwords are made per checkout by stack/certs.sh (`make up`); a broker reused from another
checkout has that checkout's, and the tests take them from there (stack/owner.sh finds them)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context

from pipeline import codec
from tests.support.oslo_rabbit import OsloPublisher, power_set_payload, wait_for_queue
from tests.support.ports import free_port
from tests.support.processes import spawn, stop

ROOT = Path(__file__).resolve().parents[2]
SECURE_KAFKA = "127.0.0.1:9094"
AMQPS = "amqps://pipeline@127.0.0.1:5671/openstack"


@dataclass(frozen=True)
class Tls:
    """The TLS material and passwords each broker was started with: its `make up`'s .stack/tls."""

    kafka: Path
    amqp: Path

    def secret(self, name: str) -> str:
        return (self.dir_of(name) / name).read_text().strip()

    def dir_of(self, name: str) -> Path:
        return self.amqp if name.lower().startswith("amqp") else self.kafka

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": self.secret("kafka-user"),
            "KAFKA_SASL_PASSWORD_FILE": str(self.kafka / "kafka-password"),
            "KAFKA_SSL_CAFILE": str(self.kafka / "ca.pem"),
            "AMQP_PASSWORD_FILE": str(self.amqp / "amqp-password"),
            "AMQP_SSL_CAFILE": str(self.amqp / "ca.pem"),
            **extra,
        }

    def passwords(self) -> list[str]:
        return [self.secret("kafka-password"), self.secret("amqp-password")]


def _owner(broker: str) -> Path:
    done = subprocess.run(["bash", str(ROOT / "stack" / "owner.sh"), broker], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:  # one line: which broker, who started it, what to do
        pytest.fail(done.stderr.strip().splitlines()[-1], pytrace=False)
    return Path(done.stdout.strip()) / "tls"


@pytest.fixture(scope="module")
def tls() -> Tls:
    return Tls(kafka=_owner("kafka"), amqp=_owner("rabbitmq"))


async def _operations(tls: Tls, topic: str, timeout: float) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=SECURE_KAFKA, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=tls.secret("kafka-user"), sasl_plain_password=tls.secret("kafka-password"),
        ssl_context=create_ssl_context(cafile=str(tls.kafka / "ca.pem")), auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not found:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(batch)
    finally:
        await consumer.stop()
    return found


@pytest.mark.integration
def test_power_on_through_tls_rabbitmq_and_sasl_ssl_kafka(tmp_path: Path, unique: str, tls: Tls) -> None:
    node = str(uuid.uuid4())
    prefix, out = f"sec{unique}.notifications.", f"sec{unique}.pipeline."
    env = tls.env()
    common = ["--kafka-bootstrap-servers", SECURE_KAFKA, "--topic-prefix", prefix, "--topic-partitions", "3"]
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "bridge")}
    worker = spawn("worker", *common, "--app-id", f"sec-{unique}", "--output-prefix", out,
                       "--store", "memory://", "--no-web", env=env, log=logs["worker"])
    metrics_port = free_port()
    bridge = spawn("bridge", *common, "--amqp-url", AMQPS, "--amqp-queue", f"sec-{unique}",
                       "--metrics-port", str(metrics_port), env=env, log=logs["bridge"])
    try:
        user, password = tls.secret("amqp-user"), tls.secret("amqp-password")
        wait_for_queue(f"sec-{unique}", url=f"amqp://{user}:{password}@127.0.0.1:5672/openstack")
        with OsloPublisher("ironic", url=f"rabbit://{user}:{password}@127.0.0.1:5672/openstack") as ironic:
            payload = power_set_payload(node)
            ironic.publish("baremetal.node.power_set.start", payload)
            time.sleep(0.5)
            ironic.publish("baremetal.node.power_set.end", payload)
        ops = asyncio.run(_operations(tls, f"{out}operations", 90))
        assert len(ops) == 1, logs["worker"].read_text()[-3000:] + logs["bridge"].read_text()[-2000:]
        op = codec.decode_value(ops[0].value)
        assert (op["node_uuid"], op["operation"], op["outcome"]) == (node, "baremetal.node.power_set", "success")
        assert 400 <= op["duration_ms"] < 10_000
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "bridge_relayed_total" in metrics
        for secret in tls.passwords():
            assert secret not in metrics
    finally:
        stop(bridge, worker)
    # Acceptance 3: no password in any line either process wrote.
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        for secret in tls.passwords():
            assert secret not in text, f"{name} log holds a password"


def _run_to_exit(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True,
                          text=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


CASES = {
    # case: (bridge or worker arguments, environment changes, what the one line must name)
    "wrong Kafka password": ([], {"KAFKA_SASL_PASSWORD_FILE": "WRONG"}, r"SASL authentication failed"),
    "untrusted Kafka CA": ([], {"KAFKA_SSL_CAFILE": "other-ca.pem"}, r"TLS certificate rejected: unable to get local issuer"),
    "wrong Kafka hostname": (["--kafka-bootstrap-servers", "localhost:9094"], {}, r"Hostname mismatch.*localhost"),
    "wrong AMQP password": ([], {"AMQP_PASSWORD_FILE": "WRONG"}, r"login was refused"),
    "untrusted AMQP CA": ([], {"AMQP_SSL_CAFILE": "other-ca.pem"}, r"RabbitMQ .*TLS certificate rejected"),
    "wrong AMQP hostname": (["--amqp-url", "amqps://pipeline@localhost:5671/openstack"], {}, r"RabbitMQ .*Hostname mismatch"),
}


@pytest.mark.integration
@pytest.mark.parametrize("command, case", [
    (command, case) for case in CASES for command in ("bridge", "worker")
    if command == "bridge" or "AMQP" not in case  # the worker does not talk to RabbitMQ
])
def test_refused_connection_is_one_line_without_secrets(case: str, command: str, tmp_path: Path, unique: str,
                                                       tls: Tls) -> None:
    extra_args, changes, expected = CASES[case]
    (tmp_path / "wrong").write_text("not-the-password\n")
    env = tls.env()
    for name, value in changes.items():
        env[name] = str(tmp_path / "wrong") if value == "WRONG" else str(tls.dir_of(name) / value)
    args = ["--kafka-bootstrap-servers", SECURE_KAFKA, "--topic-prefix", f"ref{unique}."]
    if command == "bridge":
        args = ["bridge", *args, "--amqp-url", AMQPS, "--amqp-queue", f"ref-{unique}", "--metrics-port", "0"]
    else:
        args = ["worker", *args, "--app-id", f"ref-{unique}", "--store", "memory://", "--no-web"]
    args += extra_args  # later flags win: the case's own address replaces the default one
    code, output = _run_to_exit(args, env)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1, output
    assert re.search(expected, lines[0]), lines[0]
    for secret in [*tls.passwords(), "not-the-password"]:
        assert secret not in output
