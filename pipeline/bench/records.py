"""The benchmark's records: one simulated fleet, rendered once, used by every stage.

The same bodies go through the bare aio-pika drain and the bridge; the same (topic, key, value,
headers) the bridge produces go through the bare aiokafka producer; the bridge's output is what the
bare consumer and the worker read. Bodies are rendered by `simulate.outputs.render`, which a unit
test holds byte-identical to what oslo.messaging's rabbit driver publishes.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline import codec, events
from pipeline.simulate import outputs
from pipeline.simulate.command import unique_id
from pipeline.simulate.fleet import Fleet
from pipeline.simulate.model import START, TERMINAL, Event

__all__ = ["KafkaRecord", "Published", "Workload", "kafka_record"]

KafkaRecord = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # (topic, key, value, headers)


@dataclass(slots=True)
class Published:
    """An AMQP body and where oslo would publish it; `end_key` marks an operation's terminal event."""

    body: bytes
    exchange: str
    routing_key: str
    end_key: tuple[str, str, str] | None  # (resource uuid, operation, end message id)


def kafka_record(body: bytes, topic_prefix: str) -> KafkaRecord:
    """(topic, key, value, headers) exactly as the bridge produces a body (Avro value)."""
    event = events.normalize(body, topic_prefix=topic_prefix)
    fingerprint = codec.schema(codec.NOTIFICATION).fingerprint.hex()
    headers = [
        ("event_type", event["event_type"].encode()),
        ("message_id", event["message_id"].encode()),
        ("priority", event["priority"].encode()),
        ("content-type", f"avro/binary; schema=notification; fingerprint={fingerprint}".encode()),
    ]
    return event["topic"], events.relay_key(event), codec.encode_event(event), headers


@dataclass
class Workload:
    nodes: int
    images: int
    seed: int = 0
    topics: outputs.Topics = field(default_factory=outputs.Topics)

    def __post_init__(self) -> None:
        start = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        self.fleet = Fleet(self.nodes, self.images, seed=self.seed, start=start, keep_operations=False)
        self._stream = self.fleet.events()

    def events(self, count: int) -> Iterator[Event]:
        """The next `count` events of the fleet's life (the fleet never winds down)."""
        for _ in range(count):
            yield next(self._stream)

    def publish_list(self, count: int) -> list[Published]:
        """The next `count` events as published. A terminal event is timed (`end_key`) only when its
        operation's start is among them: the slice begins mid-life, and an end whose start was in an
        earlier slice (another stage's topics) can only become an orphan_end, never a record. Nor
        when it names no resource: Glance's `image.upload` errors carry only a message, so no
        record can pair them (the worker raises missing_end for their start instead)."""
        chosen = list(self.events(count))
        started = {id(e.op) for e in chosen if e.op is not None and e.role == START}
        out = []
        for event in chosen:
            body, exchange, routing_key = outputs.render(event, unique_id(event.message_id), self.topics)
            end_key = None
            if (event.op is not None and event.role in TERMINAL and id(event.op) in started
                    and events.relay_key(events.normalize(body)) is not None):
                end_key = (event.op.resource_uuid, event.op.operation, event.message_id)
            out.append(Published(body, exchange, routing_key, end_key))
        return out
