"""The KafkaUsers' ACLs enforced by a real Kafka.

The bridge and the worker must do their whole job with exactly the rights their KafkaUsers
grant, and the rights they were not given must be refused.

No Strimzi runs here, so this test does the operators' part itself:
- it starts a private broker (the stack's Kafka jars, KRaft, StandardAuthorizer, SCRAM-SHA-512
  users) on free ports;
- it creates the dev overlay's KafkaTopics;
- it creates the KafkaUsers' ACLs through Kafka's Admin API (CreateAcls.java).

The pipeline processes then run with the dev overlay's own settings. Only addresses, ports and
paths are changed, plus SASL_PLAINTEXT in place of SASL_SSL: the private broker has no TLS, and
the ACLs do not depend on it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from tests.support.eventually import eventually
from tests.support.k8s import ROOT, Obj, Rendered, render
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

OVERLAY = "dev"
JARS = ROOT / "stack" / "lib"
PIPELINE = [sys.executable, "-m", "pipeline"]
TOPIC_AUTHORIZATION_FAILED = 29


@dataclass(frozen=True)
class Broker:
    admin_bootstrap: str  # PLAINTEXT listener, principal ANONYMOUS = super user (the operators' side)
    sasl_bootstrap: str  # SASL_PLAINTEXT listener with SCRAM-SHA-512 (the applications' side)
    passwords: dict[str, str]
    rendered: Rendered

    def client(self, user: str) -> dict:
        return {
            "bootstrap_servers": self.sasl_bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": self.passwords[user],
        }


def acl_lines(users: list[Obj]) -> str:
    """The KafkaUsers' rules in Kafka's enum names, one ACL a line, for CreateAcls.java."""
    pattern = {"literal": "LITERAL", "prefix": "PREFIXED"}
    lines = []
    for user in users:
        for rule in user["spec"]["authorization"]["acls"]:
            resource = rule["resource"]
            for operation in rule["operations"]:
                lines.append(
                    f"User:{user['metadata']['name']} {resource['type'].upper()} {resource['name']} "
                    f"{pattern[resource.get('patternType', 'literal')]} {operation.upper()}"
                )
    return "\n".join(lines) + "\n"


async def create_topics(bootstrap: str, topics: list[Obj]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # one broker: one replica, and min.insync.replicas cannot exceed it
        await admin.create_topics([
            NewTopic(
                t["spec"].get("topicName", t["metadata"]["name"]),
                t["spec"]["partitions"],
                1,
                topic_configs={k: str(v) for k, v in t["spec"]["config"].items() if k != "min.insync.replicas"},
            )
            for t in topics
        ])
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if not shutil.which("java") or not list(JARS.glob("kafka_2.13-*.jar")):
        pytest.fail("needs Java and the Kafka jars in stack/lib: run `make up`")
    home = tmp_path_factory.mktemp("acl-kafka")
    plain, sasl, controller = free_port(), free_port(), free_port()
    rendered = Rendered(OVERLAY, render(OVERLAY))
    users = rendered.of_kind("KafkaUser")
    passwords = {u["metadata"]["name"]: secrets.token_hex(12) for u in users}
    properties = home / "server.properties"
    properties.write_text(f"""
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{controller}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
auto.create.topics.enable=false
log.dirs={home}/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=16777216
num.io.threads=2
num.network.threads=2
""")
    classpath = f"{JARS}/*"
    quiet = f"-Dlog4j2.configurationFile={ROOT / 'stack' / 'tools-log4j2.properties'}"
    cluster_id = subprocess.run(
        ["java", quiet, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    scram = [arg for user, pw in passwords.items() for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]")]
    subprocess.run(
        ["java", "-Xmx256m", quiet, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
         "-t", cluster_id, "-c", str(properties), *scram],
        capture_output=True, text=True, check=True, timeout=60,
    )
    log = home / "broker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["java", "-Xms256m", "-Xmx512m", f"-Dlog4j2.configurationFile={ROOT / 'stack' / 'log4j2.properties'}",
             f"-Dkafka.logs.dir={home}", "-cp", classpath, "kafka.Kafka", str(properties)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        def started() -> bool:
            assert process.poll() is None, f"the private Kafka exited:\n{log.read_text()[-3000:]}"
            return "Kafka Server started" in log.read_text()

        eventually(started, 90, "the private Kafka started", interval=0.5, detail=lambda: log.read_text()[-3000:])
        admin_bootstrap = f"127.0.0.1:{plain}"
        asyncio.run(create_topics(admin_bootstrap, rendered.of_kind("KafkaTopic")))
        result = subprocess.run(
            ["java", "-cp", classpath, str(Path(__file__).with_name("CreateAcls.java")), admin_bootstrap],
            input=acl_lines(users), capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        yield Broker(admin_bootstrap, f"127.0.0.1:{sasl}", passwords, rendered)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pipeline_env(broker: Broker, user: str, tmp: Path) -> dict[str, str]:
    """The overlay's ConfigMap as the pod sees it, pointed at the private broker."""
    password_file = tmp / f"{user}.password"
    password_file.write_text(broker.passwords[user])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "AMQP_", "WORKER_", "BRIDGE_"))}
    env.update(broker.rendered.settings())
    env.pop("KAFKA_SSL_CAFILE")
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "HOME": str(tmp),
    })
    return env


async def end_offsets(bootstrap: str, topics: list[str], partitions: int) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(partitions)])
    finally:
        await consumer.stop()
    return {t: sum(v for tp, v in ends.items() if tp.topic == t) for t in topics}


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


def test_bridge_and_worker_do_their_job_with_their_acls(broker: Broker, tmp_path: Path) -> None:
    settings = broker.rendered.settings()
    partitions = int(settings["TOPIC_PARTITIONS"])
    bodies = tmp_path / "bodies.jsonl"
    with bodies.open("w") as out:
        subprocess.run(
            [*PIPELINE, "simulate", "--output", "stdout", "--capture", "--nodes", "10", "--images", "3",
             "--events", "300", "--seed", "7", "--quiet"],
            stdout=out, stderr=subprocess.DEVNULL, check=True, timeout=120, cwd=tmp_path,
        )
    lines = sum(1 for _ in bodies.open())
    assert lines > 100

    worker = broker.rendered.one("StatefulSet", "pipeline-worker")
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    web = free_port()
    worker_env = pipeline_env(broker, "pipeline-worker", tmp_path)
    worker_env.update({
        "WORKER_DATA_DIR": str(tmp_path / "data"),
        "WORKER_WEB_PORT": str(web),
        "WORKER_WEB_BIND": "127.0.0.1",
        "WORKER_WEB_HOST": "127.0.0.1",
        "CONSUMER_GROUP_INSTANCE_ID": "pipeline-worker-0",
    })
    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as out:
        process = subprocess.Popen([*PIPELINE, "worker"], env=worker_env, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=tmp_path)
    try:
        def ready() -> bool:
            assert process.poll() is None, f"the worker exited:\n{worker_log.read_text()[-3000:]}"
            return get(f"http://127.0.0.1:{web}/readyz") == 200

        eventually(ready, 90, "the worker ready", interval=0.5, detail=lambda: worker_log.read_text()[-3000:])

        bridge_env = pipeline_env(broker, "pipeline-bridge", tmp_path)
        bridge_env["BRIDGE_METRICS_PORT"] = "0"
        try:
            bridge = subprocess.run(
                [*PIPELINE, "bridge", "--source", f"file:{bodies}"], env=bridge_env, capture_output=True,
                text=True, timeout=60, cwd=tmp_path,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            pytest.fail(f"the bridge did not relay the file in 60 s:\n{stderr[-3000:]}")
        assert bridge.returncode == 0, bridge.stderr[-3000:]
        assert re.search(rf"\b{lines} relayed, 0 dead-lettered\b", bridge.stderr), bridge.stderr[-3000:]

        topics = worker_topic_names(broker)
        relayed = asyncio.run(end_offsets(broker.admin_bootstrap, topics["relay"], partitions))
        assert sum(relayed.values()) == lines

        def outputs_written() -> dict:
            outputs = asyncio.run(end_offsets(broker.admin_bootstrap, topics["outputs"], partitions))
            assert process.poll() is None, f"the worker exited:\n{worker_log.read_text()[-3000:]}"
            # this clean traffic finishes every operation: alerts may rightly stay empty
            return outputs if all(n for topic, n in outputs.items() if not topic.endswith("alerts")) else {}

        eventually(outputs_written, 90, "every output topic but alerts written", interval=1,
                   detail=lambda: worker_log.read_text()[-3000:])
    finally:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the worker did not stop within the pod's grace period of {grace} s")
    stopped_in = time.monotonic() - started
    assert stopped_in < grace, stopped_in
    assert "Authorization" not in worker_log.read_text(), worker_log.read_text()[-3000:]


def worker_topic_names(broker: Broker) -> dict[str, list[str]]:
    names = [t["spec"].get("topicName", t["metadata"]["name"]) for t in broker.rendered.of_kind("KafkaTopic")]
    settings = broker.rendered.settings()
    outputs = [f"{settings['OUTPUT_TOPIC_PREFIX']}{n}" for n in ("operations", "node-state", "alerts")]
    relay = [n for n in names if n.startswith(settings["TOPIC_PREFIX"])]
    return {"relay": relay, "outputs": outputs}


def test_what_the_users_were_not_given_is_refused(broker: Broker) -> None:
    relay_topic = broker.rendered.settings()["TOPIC_PREFIX"] + "baremetal.node"

    async def refusals() -> None:
        # the bridge only writes: it may not consume
        consumer = AIOKafkaConsumer(relay_topic, **broker.client("pipeline-bridge"), group_id="pipeline-bridge")
        with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
            await consumer.start()
            await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 20)
        await consumer.stop()
        # the worker only reads the relay topics: it may not write one
        producer = AIOKafkaProducer(**broker.client("pipeline-worker"), request_timeout_ms=10000)
        await producer.start()
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await asyncio.wait_for(producer.send_and_wait(relay_topic, b"x", key=b"k"), 20)
        finally:
            await producer.stop()
        # neither may create a topic outside faust's own prefix
        for user in ("pipeline-bridge", "pipeline-worker"):
            admin = AIOKafkaAdminClient(**broker.client(user))
            await admin.start()
            try:
                response = await admin.create_topics([NewTopic(f"{relay_topic}.{user}", 1, 1)])
            finally:
                await admin.close()
            assert [error[1] for error in response.topic_errors] == [TOPIC_AUTHORIZATION_FAILED], user

    asyncio.run(refusals())
