"""Publishing through oslo.messaging's own Notifier into the real RabbitMQ, the way Ironic and Glance
do: rabbit driver, messagingv2 envelope, their exchanges and topics."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import oslo_messaging
from oslo_config import cfg

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"

# service -> (control exchange, notification topic, publisher id), as the services configure them
SERVICES = {
    "ironic": ("ironic", "ironic_versioned_notifications", "ironic-conductor.conductor-1"),
    "glance": ("glance", "notifications", "image.glance-api-1"),
}


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def power_set_payload(node_uuid: str) -> dict:
    """The payload of the verbatim power_set.start wire capture, for another node."""
    for line in (FIXTURES / "research_bodies.jsonl").read_text().splitlines():
        inner = json.loads(json.loads(line)["oslo.message"])
        if inner["event_type"] == "baremetal.node.power_set.start":
            payload = copy.deepcopy(inner["payload"])
            payload["ironic_object.data"]["uuid"] = node_uuid
            return payload
    raise AssertionError("no power_set.start in the research captures")


class OsloPublisher:
    """One oslo transport per service: the exchange is the transport's control_exchange."""

    def __init__(self, service: str, url: str = RABBIT_URL, driver: str = "messagingv2",
                 topic: str | None = None) -> None:
        exchange, default_topic, publisher_id = SERVICES[service]
        topic = topic or default_topic
        conf = cfg.ConfigOpts()
        conf([], project=f"pipeline-tests-{service}")
        oslo_messaging.set_transport_defaults(control_exchange=exchange)
        self._transport = oslo_messaging.get_notification_transport(conf, url=url)
        # set_transport_defaults changes a process-wide default; pin this transport's exchange
        self._transport.conf.set_override("control_exchange", exchange)
        self.notifier = oslo_messaging.Notifier(
            self._transport, publisher_id=publisher_id, driver=driver, topics=[topic]
        )

    def publish(self, event_type: str, payload: Any, priority: str = "info") -> None:
        getattr(self.notifier, priority)({}, event_type, payload)

    def close(self) -> None:
        self._transport.cleanup()

    def __enter__(self) -> OsloPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def ready_in_queue(queue: str, url: str = "amqp://guest:guest@127.0.0.1:5672/") -> int:
    """Messages ready in the queue (not counting the ones delivered and unacked)."""
    import aio_pika

    connection = await aio_pika.connect(url, timeout=5)
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        return q.declaration_result.message_count or 0
    finally:
        await connection.close()


def wait_for_queue(name: str, timeout: float = 30.0, url: str = "amqp://guest:guest@127.0.0.1:5672/") -> None:
    """Block until the bridge has declared (and bound) its queue: messages published before that
    are dropped by the exchange, exactly as in production before the bridge's first start."""
    import asyncio

    import aio_pika

    from tests.support.eventually import eventually

    async def exists() -> bool:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            await channel.declare_queue(name, passive=True)
            return True
        except aio_pika.exceptions.ChannelClosed:
            return False
        finally:
            await connection.close()

    eventually(lambda: asyncio.run(exists()), timeout, f"queue {name!r} declared by the bridge")
