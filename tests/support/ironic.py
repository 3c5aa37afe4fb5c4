"""A real Ironic for the reconciler's tests: `ironic` 39 from PyPI in a virtualenv of its own
(stack/openstack.sh, cached under ~/.cache), one process with API and conductor (`rpc_transport =
none`), no authentication, SQLite, fake-hardware nodes. It publishes its versioned notifications into
the local RabbitMQ through oslo.messaging, on an exchange of the test's own.

`Dropper` stands between Ironic and the bridge: it reads everything Ironic publishes and republishes
it to the exchange the bridge reads, except the ends a test chooses to lose, remembering the start
of each lost end's operation.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.support import openstack_service
from tests.support.openstack_service import ApiProcess, send_reply

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
TOPIC = "ironic_versioned_notifications"
MICROVERSION = "1.80"


def install() -> Path:
    return openstack_service.install("ironic")


CONF = """[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = {host}
control_exchange = {exchange}
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake
enabled_deploy_interfaces = fake
enabled_management_interfaces = fake
enabled_power_interfaces = fake
enabled_inspect_interfaces = fake,no-inspect
enabled_network_interfaces = noop
enabled_console_interfaces = no-console
enabled_raid_interfaces = fake,no-raid
enabled_vendor_interfaces = fake,no-vendor
enabled_bios_interfaces = fake,no-bios
enabled_rescue_interfaces = fake,no-rescue
notification_level = info
versioned_notifications_topics = {topic}
transport_url = rabbit://guest:guest@127.0.0.1:5672/
[api]
host_ip = 127.0.0.1
port = {port}
[database]
connection = sqlite:///{db}
[oslo_messaging_notifications]
driver = messagingv2
[conductor]
automated_clean = false
[dhcp]
dhcp_provider = none
# delays of a second: with none, Ironic 39 loses its own async ends to a race in TaskManager
[fake]
power_delay = 1
deploy_delay = 1
inspect_delay = 1
"""


class Ironic(ApiProcess):
    """The Ironic process; `start()` again after `stop()` reuses its database."""

    name = "Ironic"
    probe = "/v1"

    def __init__(self, venv: Path, workdir: Path, exchange: str) -> None:
        super().__init__(venv, workdir)
        self.exchange = exchange
        self.conf = workdir / "ironic.conf"
        self.conf.write_text(CONF.format(host=f"test-{exchange}", exchange=exchange, topic=TOPIC, port=self.port,
                                         db=workdir / "ironic.sqlite"))
        subprocess.run([str(venv / "bin" / "ironic-dbsync"), "--config-file", str(self.conf), "create_schema"],
                       check=True, capture_output=True, timeout=300)

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "ironic"), "--config-file", str(self.conf)]

    def clouds_yaml(self, path: Path, cloud: str = "ironic-test") -> Path:
        path.write_text(f"clouds:\n  {cloud}:\n    auth_type: none\n    baremetal_endpoint_override: {self.url}\n")
        return path

    # --- the REST API, as an operator's client would drive it -----------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(method, f"{self.url}/v1{path}", json=body, timeout=30,
                             headers={"X-OpenStack-Ironic-API-Version": MICROVERSION})
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def node(self, uuid: str) -> dict:
        return self.request("GET", f"/nodes/{uuid}")

    def enroll(self, name: str) -> str:
        return self.request("POST", "/nodes", {"driver": "fake-hardware", "name": name})["uuid"]

    def provision(self, uuid: str, target: str, until: str, timeout: float = 90) -> None:
        self.request("PUT", f"/nodes/{uuid}/states/provision", {"target": target})
        self.wait(uuid, lambda n: n["provision_state"] == until and n["target_provision_state"] is None, timeout)

    def power(self, uuid: str, target: str, timeout: float = 90) -> None:
        self.request("PUT", f"/nodes/{uuid}/states/power", {"target": target})
        self.wait(uuid, lambda n: n["power_state"] == target and n["target_power_state"] is None, timeout)

    def wait(self, uuid: str, done: Callable[[dict], bool], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            node = self.node(uuid)
            if done(node):
                return node
            assert time.monotonic() < deadline, f"node {uuid} stayed {node['provision_state']}/{node['power_state']}"
            time.sleep(0.3)


def _operation(event_type: str) -> str:
    """The operation an event belongs to, for pairing a lost end with its start."""
    return "image.upload" if event_type in ("image.prepare", "image.upload") else event_type.rsplit(".", 1)[0]


class Dropper:
    """Ironic's exchange -> the bridge's, minus what `lose(event_type, data)` picks. Runs its own event
    loop in a thread; `lost` maps each lost end's message id to its node and its operation's start
    message id."""

    def __init__(self, source_exchange: str, target_exchange: str, lose: Callable[[str, dict], bool],
                 topic: str = TOPIC) -> None:
        self.source, self.target, self.lose, self.topic = source_exchange, target_exchange, lose, topic
        self.lost: dict[str, tuple[str, str]] = {}
        self.passed: list[str] = []  # event types relayed
        self._starts: dict[tuple[str, str], str] = {}  # (node, operation) -> the last start's message id
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Dropper:
        self._thread.start()
        assert self._ready.wait(30), f"the dropper did not start: {self._error}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__ or the test
            self._error = exc
            self._ready.set()

    def _decide(self, body: bytes) -> bool:
        inner = json.loads(json.loads(body)["oslo.message"])
        payload = inner["payload"] if isinstance(inner["payload"], dict) else {}
        event_type, data = inner["event_type"], payload.get("ironic_object.data", payload)  # Ironic's, Glance's
        node, operation = data.get("uuid") or data.get("id"), _operation(event_type)
        if event_type.endswith(".start") or event_type == "image.prepare":
            self._starts[(node, operation)] = inner["message_id"]
        if self.lose(event_type, data):
            if event_type.endswith(".end") or event_type == "image.upload":
                self.lost[inner["message_id"]] = (node, self._starts.get((node, operation), ""))
            return False
        self.passed.append(event_type)
        return True

    async def _run(self) -> None:
        import aio_pika

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        connection = await aio_pika.connect(AMQP, timeout=10)
        try:
            channel = await connection.channel()
            # as oslo.messaging declares it (amqp_durable_queues = false), so Ironic's publish agrees
            source = await channel.declare_exchange(self.source, aio_pika.ExchangeType.TOPIC, durable=False)
            target = await channel.get_exchange(self.target, ensure=True)
            queue = await channel.declare_queue(f"dropper-{self.source}", exclusive=True)
            await queue.bind(source, f"{self.topic}.*")

            async def relay(message: Any) -> None:
                async with message.process():
                    if self._decide(message.body):
                        await target.publish(aio_pika.Message(message.body, content_type=message.content_type),
                                             routing_key=message.routing_key or "")

            await queue.consume(relay)
            self._ready.set()
            await self._stop.wait()
        finally:
            await connection.close()


class Throttle:
    """A proxy in front of the real Ironic that answers 429 (Retry-After: 1) to the first `storm`
    requests for nodes and to every `every`-th after, and holds each answer it forwards `delay_s`:
    a throttling, slow API. Version discovery passes untouched."""

    def __init__(self, upstream: str, storm: int, every: int, delay_s: float) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.upstream, self.storm, self.every, self.delay_s = upstream, storm, every, delay_s
        self.counts = {"throttled": 0, "forwarded": 0}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, headers, body = proxy.answer(self.path, dict(self.headers))
                send_reply(self, status, headers, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, headers: dict) -> tuple[int, dict, bytes]:
        if path.startswith("/v1/nodes"):
            with self._lock:
                n = self.counts["throttled"] + self.counts["forwarded"]
                throttled = n < self.storm or n % self.every == 0
                self.counts["throttled" if throttled else "forwarded"] += 1
            if throttled:
                return 429, {"Retry-After": "1", "Content-Type": "application/json"}, b'{"error": "slow down"}'
            time.sleep(self.delay_s)
        wanted = {k: v for k, v in headers.items() if k.lower().startswith(("x-openstack", "openstack-api", "accept"))}
        r = requests.get(f"{self.upstream}{path}", headers=wanted, timeout=30)
        body = r.content.replace(self.upstream.encode(), self.url.encode())  # links point at the proxy
        return r.status_code, {"Content-Type": r.headers.get("Content-Type", "application/json")}, body

    def close(self) -> None:
        self.server.shutdown()
