"""Secure connections, configured the way production is: the bridge reads RabbitMQ over TLS (a
virtual host, a password user) and writes Kafka over SASL_SSL with SCRAM-SHA-512; the worker reads
the same listener. Credentials come from files, as Kubernetes mounts Secrets. The certificates and
passwords are made per machine by stack/certs.sh (`make up`)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context

from pipeline import codec
from tests.support.oslo_rabbit import OsloPublisher, power_set_payload, wait_for_queue
from tests.support.ports import free_port
from tests.support.processes import spawn, stop

ROOT = Path(__file__).resolve().parents[2]
TLS = Path(os.environ.get("PIPELINE_STACK_DIR", ROOT / ".stack")) / "tls"
SECURE_KAFKA = "127.0.0.1:9094"
AMQPS = "amqps://pipeline@127.0.0.1:5671/openstack"


def _secret(name: str) -> str:
    return (TLS / name).read_text().strip()


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": _secret("kafka-user"),
        "KAFKA_SASL_PASSWORD_FILE": str(TLS / "kafka-password"),
        "KAFKA_SSL_CAFILE": str(TLS / "ca.pem"),
        "AMQP_PASSWORD_FILE": str(TLS / "amqp-password"),
        "AMQP_SSL_CAFILE": str(TLS / "ca.pem"),
        **extra,
    }


async def _operations(topic: str, timeout: float) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=SECURE_KAFKA, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=_secret("kafka-user"), sasl_plain_password=_secret("kafka-password"),
        ssl_context=create_ssl_context(cafile=str(TLS / "ca.pem")), auto_offset_reset="earliest",
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


def _passwords() -> list[str]:
    return [_secret("kafka-password"), _secret("amqp-password")]


@pytest.mark.integration
def test_power_on_through_tls_rabbitmq_and_sasl_ssl_kafka(tmp_path: Path, unique: str) -> None:
    node = str(uuid.uuid4())
    prefix, out = f"sec{unique}.notifications.", f"sec{unique}.pipeline."
    env = _env()
    common = ["--kafka-bootstrap-servers", SECURE_KAFKA, "--topic-prefix", prefix, "--topic-partitions", "3"]
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "bridge")}
    worker = spawn("worker", *common, "--app-id", f"sec-{unique}", "--output-prefix", out,
                       "--store", "memory://", "--no-web", env=env, log=logs["worker"])
    metrics_port = free_port()
    bridge = spawn("bridge", *common, "--amqp-url", AMQPS, "--amqp-queue", f"sec-{unique}",
                       "--metrics-port", str(metrics_port), env=env, log=logs["bridge"])
    try:
        user, password = _secret("amqp-user"), _secret("amqp-password")
        wait_for_queue(f"sec-{unique}", url=f"amqp://{user}:{password}@127.0.0.1:5672/openstack")
        with OsloPublisher("ironic", url=f"rabbit://{user}:{password}@127.0.0.1:5672/openstack") as ironic:
            payload = power_set_payload(node)
            ironic.publish("baremetal.node.power_set.start", payload)
            time.sleep(0.5)
            ironic.publish("baremetal.node.power_set.end", payload)
        ops = asyncio.run(_operations(f"{out}operations", 90))
        assert len(ops) == 1, logs["worker"].read_text()[-3000:] + logs["bridge"].read_text()[-2000:]
        op = codec.decode_value(ops[0].value)
        assert (op["node_uuid"], op["operation"], op["outcome"]) == (node, "baremetal.node.power_set", "success")
        assert 400 <= op["duration_ms"] < 10_000
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "bridge_relayed_total" in metrics
        for secret in _passwords():
            assert secret not in metrics
    finally:
        stop(bridge, worker)
    # Acceptance 3: no password in any line either process wrote.
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        for secret in _passwords():
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
def test_refused_connection_is_one_line_without_secrets(case: str, command: str, tmp_path: Path, unique: str) -> None:
    extra_args, changes, expected = CASES[case]
    (tmp_path / "wrong").write_text("not-the-password\n")
    env = _env()
    for name, value in changes.items():
        env[name] = str(tmp_path / "wrong") if value == "WRONG" else str(TLS / value)
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
    for secret in [*_passwords(), "not-the-password"]:
        assert secret not in output
