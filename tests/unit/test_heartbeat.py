"""The heartbeat record kind (events.heartbeat_event) and the bridge's caught-up check."""
import io
import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from pipeline import codec, events, inspect
from pipeline.bridge import command
from pipeline.bridge.heartbeat import Heartbeat, HeartbeatSettings
from pipeline.bridge.sink import SinkSettings
from pipeline.cli import build_parser
from pipeline.config import ConfigError

NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def _event(**kw):
    args = dict(bridge="bridge-7", topic="notifications.baremetal.node", partition=4, vouched=NOW,
                sent_at=NOW + timedelta(seconds=3), interval_s=5.0, caught_up=True, message_id="m-1")
    args.update(kw)
    return events.heartbeat_event(**args)


@pytest.mark.parametrize("value_format", codec.VALUE_FORMATS)
def test_a_heartbeat_is_a_notification_record_every_relay_consumer_reads(value_format) -> None:
    event = _event()
    assert set(event) == set(events.EVENT_FIELDS)
    decoded = codec.decode_event(codec.encode_event(event, value_format))
    assert decoded == event
    assert decoded["event_type"] == events.HEARTBEAT_EVENT_TYPE == "pipeline.heartbeat"
    assert decoded["timestamp"] == "2026-12-02T10:00:00.000000Z"  # the time vouched for
    assert decoded["resource_uuid"] is None and decoded["family"] == decoded["service"] == "pipeline"
    assert decoded["payload"] == {"bridge": "bridge-7", "partition": 4, "sent_at": "2026-12-02T10:00:03.000000Z",
                                  "interval_s": 5.0, "caught_up": True}
    if value_format == "avro":  # the one Notification schema: JVM consumers decode it unchanged
        assert codec.decode(codec.encode_event(event))[0] == codec.NOTIFICATION


def test_a_notification_may_not_claim_to_be_a_heartbeat() -> None:
    inner = {"message_id": "x", "event_type": "pipeline.heartbeat", "priority": "INFO", "publisher_id": "evil",
             "timestamp": "2026-12-02 10:00:00.000000", "payload": {}}
    line = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode() + b"\n"
    out = io.BytesIO()
    assert inspect.inspect_lines(io.BytesIO(line), out) == 1
    assert "reserved for the bridge's heartbeat records" in json.loads(out.getvalue())["error"]


class FakeDepth:
    def __init__(self, answers):
        self.answers = list(answers)

    async def __call__(self):
        return self.answers.pop(0)


def _heartbeat(unconfirmed, depth, values=None):
    return Heartbeat(HeartbeatSettings(5.0, "b-1"), SinkSettings(bootstrap_servers=["127.0.0.1:1"]),
                     values=values or codec.Encoder("avro"), topics=lambda: [], unconfirmed=unconfirmed,
                     backlog=FakeDepth(depth))


async def test_caught_up_needs_an_empty_queue_and_nothing_unconfirmed() -> None:
    hb = _heartbeat(lambda: 0, [0])
    assert await hb.check() and hb.vouched is not None
    vouched = hb.vouched
    for unconfirmed, depth in ((lambda: 3, [0]), (lambda: 0, [12]), (lambda: 0, [None])):
        other = _heartbeat(unconfirmed, depth)
        assert not await other.check() and other.vouched is None
    # a delivery taken while the queue was asked about: not caught up, the old time is kept
    counts = iter((0, 1))
    hb.unconfirmed = lambda: next(counts)
    hb.backlog = FakeDepth([0])
    assert not await hb.check() and hb.vouched == vouched


def test_records_go_to_every_partition_with_their_header() -> None:
    hb = _heartbeat(lambda: 0, [])
    hb.vouched = NOW
    hb._partitions = {"notifications.baremetal.node": [0, 1, 2], "notifications.image": [0, 1, 2]}
    records = hb.records(NOW + timedelta(seconds=1))
    assert [(t, p) for t, p, _, _ in records] == [(t, p) for t in hb._partitions for p in range(3)]
    for topic, partition, value, headers in records:
        h = dict(headers)
        assert h["kind"] == b"heartbeat" and h["event_type"] == b"pipeline.heartbeat"
        event = codec.decode_event(value)
        assert event["topic"] == topic and event["payload"]["partition"] == partition
        assert h["message_id"] == event["message_id"].encode()
        assert h["content-type"].startswith(b"avro/binary; schema=notification")
    assert len({dict(h)["message_id"] for *_, h in records}) == len(records)


def test_heartbeats_are_framed_like_the_notifications_beside_them() -> None:
    """With registry framing a heartbeat carries its topic's registry id, as the relay's records do
    (a downstream app reading through the registry must decode every record of a relay topic)."""
    ids = codec.SchemaIds()
    notification = codec.schema(codec.NOTIFICATION)
    ids.learn("notifications.baremetal.node-value", 7, notification)
    ids.learn("notifications.image-value", 9, notification)
    values = codec.Encoder("avro", "registry", ids)
    hb = _heartbeat(lambda: 0, [], values)
    hb.vouched = NOW
    hb._partitions = {"notifications.baremetal.node": [0], "notifications.image": [0]}
    for topic, _, value, headers in hb.records(NOW):
        schema_id = ids.id_for(f"{topic}-value", notification)
        assert value[:5] == b"\x00" + schema_id.to_bytes(4, "big")
        assert dict(headers)["content-type"] == values.event(_event(topic=topic), topic)[1]
        assert values.event(_event(topic=topic), topic)[1].endswith(f"framing=registry; id={schema_id}".encode())
    json_hb = _heartbeat(lambda: 0, [], codec.Encoder("json"))
    json_hb.vouched, json_hb._partitions = NOW, {"notifications.image": [0]}
    (_, _, value, headers), = json_hb.records(NOW)
    assert dict(headers)["content-type"] == b"application/json" and orjson.loads(value)["event_type"] == "pipeline.heartbeat"


def test_settings(monkeypatch) -> None:
    args = build_parser("bridge").parse_args(["bridge"])
    hb = command.heartbeat_from_args(args)
    assert hb.interval_s == 5.0 and hb.bridge_id
    monkeypatch.setenv("BRIDGE_HEARTBEAT_INTERVAL", "0")
    monkeypatch.setenv("BRIDGE_ID", "pipeline-bridge-5d8f-x2")
    hb = command.heartbeat_from_args(build_parser("bridge").parse_args(["bridge"]))
    assert hb == HeartbeatSettings(0.0, "pipeline-bridge-5d8f-x2")
    with pytest.raises(ConfigError, match="--heartbeat-interval"):
        command.heartbeat_from_args(build_parser("bridge").parse_args(["bridge", "--heartbeat-interval", "-1"]))


async def test_a_bridge_never_caught_up_writes_nothing_and_opens_no_producer() -> None:
    hb = _heartbeat(lambda: 5, [0, 0])
    assert await hb.beat() == 0 and await hb.beat() == 0
    assert hb._producer is None and hb.vouched is None


async def test_stopping_the_heartbeat_producer_lets_a_cancellation_through() -> None:
    """A bridge whose relay ended cancels its heartbeat task and waits for it: a cancellation that
    arrives while the heartbeat stops its producer must end the task, or the process never exits."""
    import asyncio

    from pipeline.bridge.heartbeat import _quiet_stop

    class SlowProducer:
        async def stop(self) -> None:
            await asyncio.sleep(5)

    task = asyncio.ensure_future(_quiet_stop(SlowProducer()))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
