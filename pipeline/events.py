"""Decode + classify + mask: the normalized event of docs/contracts.md, as a plain dict."""
from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

from . import catalog, redact, wire
from .catalog import Phase
from .wire import Priority, Rejected

__all__ = [
    "DEADLETTER_TOPIC",
    "EVENT_FIELDS",
    "HEARTBEAT_EVENT_TYPE",
    "HEARTBEAT_KIND",
    "NormalizedEvent",
    "canonical_uuid",
    "heartbeat_event",
    "normalize",
    "normalize_line",
    "normalize_notification",
    "relay_headers",
    "relay_key",
    "topic_for",
]

DEADLETTER_TOPIC = "notifications.deadletter"
DEFAULT_TOPIC_PREFIX = "notifications."

# The bridge's heartbeat record (docs/contracts.md, Heartbeats): a Notification record in every
# partition of every relay topic, marked by the header `kind: heartbeat`. A notification arriving
# with this event type would move the workers' clocks, so the bridge never relays one.
HEARTBEAT_EVENT_TYPE = "pipeline.heartbeat"
HEARTBEAT_KIND = b"heartbeat"
# Event types only the pipeline writes: one arriving on the bus would move the workers' clocks or
# close operations on a stranger's word, so the bridge dead-letters it.
_RESERVED = {HEARTBEAT_EVENT_TYPE: "the bridge's heartbeat records",
             catalog.OBSERVED_EVENT_TYPE: "the reconciler's observations"}

class NormalizedEvent(TypedDict):
    """One notification as every part of the pipeline sees it (docs/contracts.md, "The normalized
    event"); `avro/notification.avsc` is the same record on the wire."""

    message_id: str
    event_type: str
    priority: Priority
    publisher_id: str
    timestamp: str  # RFC 3339 UTC with Z
    service: str
    family: str
    resource_uuid: str | None
    node_uuid: str | None
    action: str
    phase: Phase | None
    operation: str | None
    payload_name: str | None
    payload_version: str | None
    topic: str
    payload: Any  # masked


EVENT_FIELDS = tuple(NormalizedEvent.__annotations__)

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Only the dashed form in free text: 32 bare hex digits there are as likely an MD5 checksum.
_UUID_IN_TEXT = re.compile(
    r"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f-])"
)
# Kafka topic names: [a-zA-Z0-9._-], at most 249 characters.
_TOPIC_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")
_MAX_TOPIC_LEN = 249


def canonical_uuid(value: Any) -> str | None:
    """Lower-case dashed UUID, or None when `value` is not one.

    Accepted spellings are the unambiguous ones `uuid.UUID` reads: upper case, 32 hex digits without
    dashes, ``{braces}`` and ``urn:uuid:``. Anything else (an integer id, a name) is not a UUID.
    """
    if not isinstance(value, str):
        return None
    if len(value) == 36 and _CANONICAL.fullmatch(value):
        return value
    if len(value) > 45:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def _lookup(payload: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _first_uuid(payload: Any, paths: tuple[tuple[str, ...], ...]) -> str | None:
    for path in paths:
        found = canonical_uuid(_lookup(payload, path))
        if found is not None:
            return found
    return None


def _text_uuid(text: str) -> str | None:
    match = _UUID_IN_TEXT.search(text)
    return match.group(0).lower() if match else None


def topic_for(family: str, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    topic = topic_prefix + family
    if _TOPIC_UNSAFE.search(topic):
        topic = _TOPIC_UNSAFE.sub("_", topic)
    return topic[:_MAX_TOPIC_LEN]


def _ironic_meta(payload: Any, key: str) -> str | None:
    if isinstance(payload, dict):
        value = payload.get(key)
        if isinstance(value, str):
            return value
    return None


def normalize_notification(n: wire.Notification, *, topic_prefix: str = DEFAULT_TOPIC_PREFIX) -> NormalizedEvent:
    """A decoded Notification -> the normalized event dict (payload masked). Raises Rejected."""
    reserved = _RESERVED.get(n.event_type)
    if reserved is not None:
        raise Rejected(f"event type {n.event_type} is reserved for {reserved}")
    cls = catalog.classify(n.event_type, n.priority)
    payload = n.payload
    if isinstance(payload, str):
        resource_uuid = _text_uuid(payload) if cls.uuid_from_text else None
        node_uuid = resource_uuid if cls.node_is_resource else None
    else:
        resource_uuid = _first_uuid(payload, cls.resource_paths)
        node_uuid = resource_uuid if cls.node_is_resource else _first_uuid(payload, cls.node_paths)
    try:
        masked = redact.mask(payload)
    except redact.TooDeep as exc:
        raise Rejected(f"payload {exc}") from None
    return {
        "message_id": n.message_id,
        "event_type": n.event_type,
        "priority": n.priority,
        "publisher_id": n.publisher_id,
        "timestamp": wire.rfc3339(n.timestamp),
        "service": cls.service,
        "family": cls.family,
        "resource_uuid": resource_uuid,
        "node_uuid": node_uuid,
        "action": cls.action,
        "phase": cls.phase,
        "operation": cls.operation,
        "payload_name": _ironic_meta(payload, "ironic_object.name"),
        "payload_version": _ironic_meta(payload, "ironic_object.version"),
        "topic": topic_for(cls.family, topic_prefix),
        "payload": masked,
    }


def normalize(body: bytes | str, *, topic_prefix: str = DEFAULT_TOPIC_PREFIX,
              max_bytes: int = wire.MAX_BODY_BYTES) -> NormalizedEvent:
    """An AMQP body as published -> the normalized event. Raises wire.Rejected with a reason."""
    return normalize_notification(wire.decode_body(body, max_bytes=max_bytes), topic_prefix=topic_prefix)


def normalize_line(line: bytes | str, *, topic_prefix: str = DEFAULT_TOPIC_PREFIX,
                   max_bytes: int = wire.MAX_BODY_BYTES) -> NormalizedEvent:
    """A `pipeline inspect` / file-source line (body or capture object) -> the normalized event."""
    n, _, _, _ = wire.decode_line(line, max_bytes=max_bytes)
    return normalize_notification(n, topic_prefix=topic_prefix)


def relay_key(event: Mapping[str, Any]) -> bytes | None:
    """The Kafka key: the resource UUID as UTF-8 text (None when the message holds none)."""
    resource_uuid = event.get("resource_uuid")
    return resource_uuid.encode() if resource_uuid else None


def relay_headers(event: Mapping[str, Any], content_type: bytes) -> list[tuple[str, bytes]]:
    """The headers of a relay record (docs/contracts.md, Kafka topics)."""
    return [("event_type", event["event_type"].encode()), ("message_id", event["message_id"].encode()),
            ("priority", event["priority"].encode()), ("content-type", content_type)]


def heartbeat_event(*, bridge: str, topic: str, partition: int, vouched: datetime, sent_at: datetime,
                    interval_s: float, caught_up: bool, message_id: str) -> dict:
    """The normalized event of a heartbeat: `timestamp` is the time the bridge vouches for (every
    notification it was handed before then is in Kafka ahead of this record), `payload.sent_at` its
    clock when it wrote the record (liveness). A bridge that is not caught up repeats its last vouched
    time with a new `sent_at`: alive, holding the clock."""
    return {
        "message_id": message_id,
        "event_type": HEARTBEAT_EVENT_TYPE,
        "priority": "debug",
        "publisher_id": f"pipeline-bridge.{bridge}",
        "timestamp": wire.rfc3339(vouched),
        "service": "pipeline",
        "family": "pipeline",
        "resource_uuid": None,
        "node_uuid": None,
        "action": "heartbeat",
        "phase": None,
        "operation": None,
        "payload_name": None,
        "payload_version": None,
        "topic": topic,
        "payload": {"bridge": bridge, "partition": partition, "sent_at": wire.rfc3339(sent_at),
                    "interval_s": interval_s, "caught_up": caught_up},
    }
