"""The relay's rules without brokers: what goes where, when a delivery is settled, back-pressure,
retries and dead letters. The Kafka side is an in-memory recorder (real brokers: tests/integration)."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
)

from pipeline import codec
from pipeline.bridge import relay as relay_mod
from pipeline.bridge import sink as sink_mod
from pipeline.bridge.relay import (
    BridgeSettings,
    Relay,
    catalog_topics,
    deadletter_topic,
    reason_class,
)
from pipeline.bridge.sink import SinkSettings
from pipeline.bridge.sources import Delivery, InOrder
from tests.support.oslo_wire import publish

NODE = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
IMAGE = "6a3f0d1e-2b7c-4f3e-9d8a-5c1e7b2a9f40"


def node_body(event_type: str = "baremetal.node.power_set.start", priority: str = "info") -> bytes:
    payload = {"ironic_object.name": "NodeSetPowerStatePayload", "ironic_object.namespace": "ironic",
               "ironic_object.version": "1.17", "ironic_object.data": {"uuid": NODE, "power_state": "power off",
                                                                       "driver_info": {"ipmi_password": "hunter2"}}}
    return publish(event_type, payload, priority=priority).body


class Recorder:
    """Stands in for KafkaSink: records sends, resolves or fails them when the test says so."""

    def __init__(self, auto_ack: bool = True) -> None:
        self.topics: set[str] = set()
        self.created: list[str] = []
        self.sent: list[tuple[str, bytes, bytes | None, dict]] = []
        self.futures: list[asyncio.Future] = []
        self.auto_ack = auto_ack
        self.fail_send: list[BaseException] = []
        self.producer = object()
        self.generation = 0
        self.abandoned = -1
        self.renewals: list[BaseException | None] = []

    def abandon(self):
        if self.producer is not None:
            self.producer, self.abandoned = None, self.generation

    async def renew(self, cause, stop=None):
        self.renewals.append(cause)
        self.generation += 1
        self.producer = object()
        return True

    async def ensure_topics(self, topics):
        for t in topics:
            if t not in self.topics:
                self.topics.add(t)
                self.created.append(t)

    async def send(self, topic, value, key, headers):
        if self.fail_send:
            raise self.fail_send.pop(0)
        self.sent.append((topic, value, key, dict(headers)))
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        if self.auto_ack:
            fut.set_result(None)
        return fut


class ListSource:
    def __init__(self, deliveries):
        self.deliveries = deliveries
        self.description = "test"
        self.stopped = False

    async def __aiter__(self):
        for d in self.deliveries:
            if self.stopped:
                return
            yield d
            await asyncio.sleep(0)

    def stop(self):
        self.stopped = True

    async def close(self):
        pass


def settings(**kw) -> BridgeSettings:
    return BridgeSettings(sink=SinkSettings(bootstrap_servers=["x:1"]), topic_prefix="t.", **kw)


def delivery(body: bytes, settled: list, name: str, **kw) -> Delivery:
    return Delivery(body, kw.get("exchange", "ironic"), kw.get("routing_key", "ironic_versioned_notifications.info"),
                    settle=lambda: settled.append(name), reason=kw.get("reason"))


async def relay_all(deliveries, sink=None, **kw) -> tuple[Relay, Recorder]:
    sink = sink or Recorder()
    relay = Relay(settings(**kw), ListSource(deliveries), sink)
    await relay.run(asyncio.Event())
    return relay, sink


async def test_record_topic_key_headers_and_value() -> None:
    settled: list = []
    relay, sink = await relay_all([delivery(node_body(), settled, "a")])
    assert settled == ["a"]
    [(topic, value, key, headers)] = sink.sent
    assert topic == "t.baremetal.node"
    assert key == NODE.encode()
    event = codec.decode_event(value)
    assert headers["event_type"] == b"baremetal.node.power_set.start"
    assert headers["message_id"] == event["message_id"].encode()
    assert headers["priority"] == b"info"
    fp = codec.schema("notification").fingerprint.hex()
    assert headers["content-type"] == f"avro/binary; schema=notification; fingerprint={fp}".encode()
    assert event["payload"]["ironic_object.data"]["driver_info"]["ipmi_password"] == "***"
    assert relay.relayed == 1 and relay.in_flight == 0


async def test_json_value_format() -> None:
    relay, sink = await relay_all([delivery(node_body(), [], "a")], value_format="json")
    [(_, value, _, headers)] = sink.sent
    assert headers["content-type"] == b"application/json"
    assert orjson.loads(value)["resource_uuid"] == NODE


async def test_null_key_only_without_uuid() -> None:
    body = publish("metadef_namespace.create", {"namespace": "OS::Compute::Libvirt"},
                   publisher_id="image.glance-api-1").body
    _, sink = await relay_all([delivery(body, [], "a", exchange="glance", routing_key="notifications.info")])
    [(topic, _, key, _)] = sink.sent
    assert topic == "t.metadef_namespace" and key is None


@pytest.mark.parametrize("body, cls", [
    (b"not json at all", "not_json"),
    (b'{"oslo.version": "2.0", "oslo.message": "{broken"}', "not_json"),
    (b'{"oslo.version": "2.0", "oslo.message": "{\\"event_type\\": \\"x.y\\"}"}', "bad_message"),
    (b"[1, 2]", "bad_body"),
])
async def test_undecodable_bodies_are_dead_lettered_and_settled(body: bytes, cls: str) -> None:
    settled: list = []
    relay, sink = await relay_all([delivery(body, settled, "bad", exchange="glance", routing_key="notifications.info"),
                                   delivery(node_body(), settled, "good")])
    assert settled == ["bad", "good"]  # the relay goes on after a bad body
    dead, good = sink.sent
    assert dead[0] == "t.deadletter" and dead[1] == body and dead[2] is None
    assert dead[3]["exchange"] == b"glance" and dead[3]["routing_key"] == b"notifications.info"
    reason = dead[3]["reason"].decode()
    assert reason and "\n" not in reason
    assert reason_class(reason) == cls
    assert good[0] == "t.baremetal.node"
    assert relay.deadlettered == 1 and relay.relayed == 1


async def test_source_side_rejection_goes_to_dead_letter() -> None:
    settled: list = []
    _, sink = await relay_all([delivery(b"garbage line", settled, "x", reason="line is not JSON: boom")])
    assert sink.sent[0][0] == "t.deadletter" and sink.sent[0][3]["reason"] == b"line is not JSON: boom"
    assert settled == ["x"]


@pytest.mark.parametrize("minimum, relayed", [
    ("debug", {"debug", "info", "warn", "error", "critical", "audit", "sample"}),
    ("info", {"info", "warn", "error", "critical", "audit", "sample"}),
    ("warning", {"warn", "error", "critical"}),
    ("warn", {"warn", "error", "critical"}),
    ("error", {"error", "critical"}),
    ("critical", {"critical"}),
])
async def test_min_priority_follows_notification_level(minimum: str, relayed: set) -> None:
    priorities = ["debug", "info", "warn", "error", "critical", "audit", "sample"]
    settled: list = []
    ds = [delivery(node_body(priority=p), settled, p) for p in priorities]
    relay, sink = await relay_all(ds, min_priority=minimum)
    assert {h["priority"].decode() for _, _, _, h in sink.sent} == relayed
    assert sorted(settled) == sorted(priorities)  # filtered ones are acked too
    assert relay.filtered == len(priorities) - len(relayed)


async def test_settled_only_after_kafka_ack_and_bounded_in_flight() -> None:
    sink = Recorder(auto_ack=False)
    settled: list = []
    ds = [delivery(node_body(), settled, i) for i in range(10)]
    relay = Relay(settings(max_in_flight=4), ListSource(ds), sink)
    task = asyncio.create_task(relay.run(asyncio.Event()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(sink.sent) == 4 and settled == [] and relay.in_flight == 4  # stopped taking deliveries
    sink.futures[1].set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert settled == [1] and len(sink.sent) == 5
    while not task.done():
        for f in sink.futures:
            if not f.done():
                f.set_result(None)
        await asyncio.sleep(0)
    assert sorted(settled) == list(range(10)) and relay.in_flight == 0


async def test_failed_produce_is_retried_not_settled(monkeypatch) -> None:
    monkeypatch.setattr(sink_mod.random, "uniform", lambda a, b: 0.01)
    sink = Recorder(auto_ack=False)
    settled: list = []
    relay = Relay(settings(), ListSource([delivery(node_body(), settled, "a")]), sink)
    task = asyncio.create_task(relay.run(asyncio.Event()))
    while not sink.futures:
        await asyncio.sleep(0)
    sink.futures[0].set_exception(KafkaTimeoutError())
    await asyncio.sleep(0.05)
    assert settled == [] and len(sink.sent) == 2  # sent again, same record
    assert sink.sent[0] == sink.sent[1]
    sink.futures[1].set_result(None)
    await task
    assert settled == ["a"] and relay.relayed == 1


async def test_a_failed_record_is_produced_again_in_order_on_a_new_producer(monkeypatch) -> None:
    """Kafka fails a record it had taken (OutOfOrderSequenceNumber after a broker restart): the
    producer is abandoned and a new one takes that record and every unconfirmed one, in their first
    order, before any new delivery; a late ack from the old producer does not settle twice."""
    monkeypatch.setattr(sink_mod.random, "uniform", lambda a, b: 0.01)
    sink = Recorder(auto_ack=False)
    settled: list = []
    phases = ["start", "end", "start", "end"]
    bodies = [delivery(node_body(f"baremetal.node.power_set.{ph}"), settled, f"{i}") for i, ph in enumerate(phases)]
    relay = Relay(settings(max_in_flight=3), ListSource(bodies), sink)
    task = asyncio.create_task(relay.run(asyncio.Event()))
    while len(sink.futures) < 3:  # the fourth waits for in-flight space
        await asyncio.sleep(0)
    old = list(sink.futures)
    old[1].set_exception(OutOfOrderSequenceNumber())
    old[2].set_exception(OutOfOrderSequenceNumber())  # the abandoned producer reports more
    old[0].set_result(None)  # ... and delivers one after all: a duplicate, settled once
    while len(sink.futures) < 6:
        await asyncio.sleep(0.01)
    assert len(sink.renewals) == 1 and sink.generation == 1
    ids = [h["message_id"] for _, _, _, h in sink.sent]
    while len(sink.futures) < 6 or not all(f.done() for f in sink.futures[3:]) or len(settled) < 4:
        for fut in sink.futures[3:]:
            if not fut.done():
                fut.set_result(None)
        await asyncio.sleep(0.01)
    await task
    assert sorted(settled) == ["0", "1", "2", "3"] and relay.relayed == 4
    replayed = [h["message_id"] for _, _, _, h in sink.sent[3:]]
    assert replayed[:2] == ids[1:3]  # the failed records first, in order, then the new delivery
    assert len(sink.sent) == 6


async def test_send_raising_timeout_is_retried(monkeypatch) -> None:
    monkeypatch.setattr(sink_mod.random, "uniform", lambda a, b: 0.01)
    sink = Recorder()
    sink.fail_send = [KafkaTimeoutError(), KafkaTimeoutError()]
    settled: list = []
    relay, _ = await relay_all([delivery(node_body(), settled, "a")], sink=sink)
    assert settled == ["a"] and len(sink.sent) == 1


async def test_a_record_kafka_did_not_take_holds_back_the_ones_behind_it(monkeypatch) -> None:
    """start and end of one node: the end must not overtake a start Kafka refused for a while."""
    monkeypatch.setattr(sink_mod.random, "uniform", lambda a, b: 0.01)
    sink = Recorder()
    sink.fail_send = [KafkaTimeoutError()]
    settled: list = []
    await relay_all([delivery(node_body("baremetal.node.power_set.start"), settled, "start"),
                     delivery(node_body("baremetal.node.power_set.end"), settled, "end")], sink=sink)
    assert [h["event_type"] for _, _, _, h in sink.sent] == [b"baremetal.node.power_set.start",
                                                              b"baremetal.node.power_set.end"]
    assert settled == ["start", "end"]


async def test_record_kafka_refuses_goes_to_dead_letter() -> None:
    sink = Recorder()
    sink.fail_send = [MessageSizeTooLargeError("too big")]
    settled: list = []
    relay, _ = await relay_all([delivery(node_body(), settled, "a")], sink=sink)
    [(topic, value, _, headers)] = sink.sent
    assert topic == "t.deadletter" and headers["reason"].startswith(b"kafka rejected the record")
    assert settled == ["a"] and relay.deadlettered == 1


async def test_stop_event_stops_taking_deliveries() -> None:
    stop = asyncio.Event()
    settled: list = []

    class Endless(ListSource):
        async def __aiter__(self):
            i = 0
            while not self.stopped:
                i += 1
                yield delivery(node_body(), settled, i)
                await asyncio.sleep(0)

    sink = Recorder()
    relay = Relay(settings(), Endless([]), sink)
    task = asyncio.create_task(relay.run(stop))
    while len(settled) < 5:
        await asyncio.sleep(0.001)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert relay.in_flight == 0 and len(settled) == len(sink.sent)


async def test_in_order_confirms_only_contiguous_prefix() -> None:
    confirmed: list[int] = []
    window = InOrder(confirmed.append)
    settle = {tag: window.track(tag) for tag in range(1, 7)}
    settle[2]()
    settle[3]()
    await asyncio.sleep(0)
    assert confirmed == []  # 1 is still out
    settle[1]()
    settle[5]()
    await asyncio.sleep(0)
    assert confirmed == [3]  # one multiple-ack for 1..3, 5 waits for 4
    settle[4]()
    settle[6]()
    await asyncio.sleep(0)
    assert confirmed == [3, 6] and len(window) == 0


def test_topics() -> None:
    assert deadletter_topic("notifications.") == "notifications.deadletter"
    topics = catalog_topics("p.")
    assert "p.baremetal.node" in topics and "p.image" in topics and "p.task" in topics
    assert "p.image.member" in topics and topics[-1] == "p.deadletter"
    assert len(topics) == len(set(topics))


async def test_topic_creation_failure_waits_instead_of_crashing(monkeypatch) -> None:
    monkeypatch.setattr(relay_mod.asyncio, "sleep", _fast_sleep)
    sink = Recorder()
    failures = [OSError("Kafka away"), OSError("Kafka away")]
    real = sink.ensure_topics

    async def flaky(topics):
        if failures:
            raise failures.pop(0)
        await real(topics)

    sink.ensure_topics = flaky
    settled: list = []
    relay, _ = await relay_all([delivery(node_body(), settled, "a")], sink=sink)
    assert settled == ["a"] and sink.sent[0][0] == "t.baremetal.node" and not failures


_real_sleep = asyncio.sleep


async def _fast_sleep(delay, *args):
    await _real_sleep(0)


async def test_topic_kafka_refuses_to_create_dead_letters_instead_of_stalling() -> None:
    from pipeline.bridge.sink import TopicRefused

    sink = Recorder()
    sink.topics.add("t.deadletter")
    real = sink.ensure_topics

    async def refusing(topics):
        if "t.baremetal.node" in topics:
            raise TopicRefused("Kafka refuses to create t.baremetal.node: error 29")
        await real(topics)

    sink.ensure_topics = refusing
    settled: list = []
    body = publish("image.create", {"id": IMAGE}, publisher_id="image.glance-api-1").body
    relay, _ = await relay_all([delivery(node_body(), settled, "node"), delivery(body, settled, "image")], sink=sink)
    assert settled == ["node", "image"]
    dead, image = sink.sent
    assert dead[0] == "t.deadletter" and b"t.baremetal.node cannot be created" in dead[3]["reason"]
    assert reason_class(dead[3]["reason"].decode()) == "topic_refused"
    assert image[0] == "t.image"
