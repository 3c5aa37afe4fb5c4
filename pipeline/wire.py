"""Decode an oslo.messaging notification body as it travels on the bus.

Two shapes exist on the wire (oslo.messaging ``_drivers/common.py``):

* messagingv2: ``{"oslo.version": "2.0", "oslo.message": "<inner message as a JSON *string*>"}``
* messaging (v1): the inner message itself, a bare dict.

The inner message holds ``message_id``, ``publisher_id``, ``event_type``, ``priority`` (upper case on
the wire), ``payload`` (any JSON value, a plain string for Glance errors) and ``timestamp``
(``str()`` of a naive UTC datetime, with or without fraction). The rabbit driver adds ``_unique_id``
and one ``_context_<key>`` per context field; oslo's Kafka driver nests the context as ``_context``.
Neither is payload.

Everything here is pure: bytes in, a `Notification` or a `Rejected` with a one-line reason out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson

__all__ = [
    "MAX_BODY_BYTES",
    "PRIORITIES",
    "Notification",
    "Rejected",
    "decode_body",
    "decode_line",
    "parse_timestamp",
    "read_line",
    "rfc3339",
]

# RabbitMQ 4's default max_message_size is 16 MiB, so nothing larger can reach us from the bus.
# A 5 MB body decodes; the sink decides whether Kafka takes it (its own max.message.bytes).
MAX_BODY_BYTES = 16 * 1024 * 1024

# oslo's NotificationDispatcher.PRIORITIES; the wire carries them upper case.
Priority = Literal["audit", "debug", "info", "warn", "error", "critical", "sample"]
PRIORITIES: frozenset[Priority] = frozenset(get_args(Priority))
# `warning` is never sent by oslo (Notifier.warning -> WARN) but is the same level, unambiguously.
_PRIORITY_ALIASES = {"warning": "warn"}

# Context fields that carry credentials. oslo's redacted_copy() already nulls the token; a
# hand-built or v1 body may not, so they never enter a Notification at all.
_SECRET_CONTEXT_KEYS = frozenset({"auth_token", "auth_token_info", "password", "secret"})

_MAX_REASON_LEN = 300
_MAX_ID_LEN = 255
_MAX_EVENT_TYPE_LEN = 255
# oslo writes "YYYY-MM-DD HH:MM:SS[.ffffff]"; ISO 8601 with T, Z or an offset is accepted too.
_TIMESTAMP_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}")
_EVENT_TYPE_SHAPE = re.compile(r"[^\s.]+(?:\.[^\s.]+)*")


class Rejected(ValueError):
    """A body that is not a notification. `reason` is one human-readable line."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(reason.split())  # one line, whatever the cause said
        if len(reason) > _MAX_REASON_LEN:  # it travels as a Kafka header of the dead letter
            reason = reason[: _MAX_REASON_LEN - 3] + "..."
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Notification:
    message_id: str
    event_type: str
    priority: Priority  # lower case
    publisher_id: str
    timestamp: datetime  # aware, UTC
    payload: Any  # the inner payload as sent: NOT masked
    context: dict = field(default_factory=dict)  # without the _context_ prefix, secrets dropped
    unique_id: str | None = None  # the rabbit driver's `_unique_id`, when present


def _loads(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"{what} is not JSON: {exc}") from None


def _check_size(data: bytes | str, max_bytes: int) -> None:
    # len(str) <= its UTF-8 size <= 4 * len(str): close enough for a limit meant to stop abuse.
    if len(data) > max_bytes:
        raise Rejected(f"body of {len(data)} bytes exceeds the limit of {max_bytes} bytes")


def parse_timestamp(value: Any) -> datetime:
    """oslo's naive UTC ``str(datetime)`` (or ISO 8601) -> aware UTC datetime; raises Rejected."""
    if not isinstance(value, str):
        raise Rejected(f"timestamp is not a string: {type(value).__name__}")
    if not _TIMESTAMP_SHAPE.match(value):
        raise Rejected(f"timestamp is not 'YYYY-MM-DD HH:MM:SS[.ffffff]': {value[:64]!r}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(f"timestamp is not a valid date and time: {value[:64]!r}") from None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)  # oslo's timeutils.utcnow() is naive UTC
    try:
        return ts.astimezone(UTC)
    except (OverflowError, ValueError):  # an offset that moves it out of years 1-9999
        raise Rejected(f"timestamp is out of range: {value[:64]!r}") from None


def rfc3339(ts: datetime) -> str:
    """``2026-11-22T01:09:39.839084Z``: always six fraction digits, so the text sorts like the time."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:"
        f"{ts.second:02d}.{ts.microsecond:06d}Z"
    )


def _required_str(msg: dict, key: str, max_len: int) -> str:
    if key not in msg:
        raise Rejected(f"missing {key}")
    value = msg[key]
    if not isinstance(value, str):
        raise Rejected(f"{key} is not a string: {type(value).__name__}")
    if not value:
        raise Rejected(f"{key} is empty")
    if len(value) > max_len:
        raise Rejected(f"{key} is longer than {max_len} characters")
    return value


def _priority(msg: dict) -> Priority:
    raw = _required_str(msg, "priority", 32)
    priority = raw.lower()
    priority = _PRIORITY_ALIASES.get(priority, priority)
    if priority not in PRIORITIES:
        raise Rejected(f"unknown priority {raw!r}")
    return priority


def _context(msg: dict) -> dict:
    ctx: dict = {}
    nested = msg.get("_context")  # oslo's Kafka driver
    if isinstance(nested, dict):
        ctx.update(nested)
    for key, value in msg.items():
        if key.startswith("_context_"):
            ctx[key[9:]] = value
    for key in _SECRET_CONTEXT_KEYS.intersection(ctx):
        del ctx[key]
    return ctx


def _unwrap(obj: Any) -> dict:
    """The inner message of a v2 envelope, or the v1 bare dict itself."""
    if not isinstance(obj, dict):
        raise Rejected(f"body is not a JSON object but {_json_type(obj)}")
    if "oslo.version" not in obj and "oslo.message" not in obj:
        return obj
    version = obj.get("oslo.version")
    if not isinstance(version, str) or version.split(".", 1)[0] != "2":
        raise Rejected(f"unsupported oslo.version {version!r} (2.x expected)")
    inner = obj.get("oslo.message")
    if not isinstance(inner, str):
        raise Rejected(f"oslo.message is not a JSON string but {_json_type(inner)}")
    msg = _loads(inner, "oslo.message")
    if not isinstance(msg, dict):
        raise Rejected(f"oslo.message is not a JSON object but {_json_type(msg)}")
    return msg


_JSON_TYPES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _from_message(msg: dict) -> Notification:
    message_id = _required_str(msg, "message_id", _MAX_ID_LEN)
    event_type = _required_str(msg, "event_type", _MAX_EVENT_TYPE_LEN)
    if not _EVENT_TYPE_SHAPE.fullmatch(event_type):
        raise Rejected(f"event_type is not a dotted name: {event_type[:64]!r}")
    priority = _priority(msg)
    if "timestamp" not in msg:
        raise Rejected("missing timestamp")
    timestamp = parse_timestamp(msg["timestamp"])
    if "payload" not in msg:
        raise Rejected("missing payload")
    publisher = msg.get("publisher_id")
    if publisher is None:
        publisher = ""
    elif not isinstance(publisher, str):
        raise Rejected(f"publisher_id is not a string: {type(publisher).__name__}")
    unique_id = msg.get("_unique_id")
    return Notification(
        message_id=message_id,
        event_type=event_type,
        priority=priority,
        publisher_id=publisher,
        timestamp=timestamp,
        payload=msg["payload"],
        context=_context(msg),
        unique_id=unique_id if isinstance(unique_id, str) else None,
    )


def decode_parsed(obj: Any) -> Notification:
    """An already JSON-decoded body -> Notification; raises Rejected."""
    return _from_message(_unwrap(obj))


def decode_body(body: bytes | str, *, max_bytes: int = MAX_BODY_BYTES) -> Notification:
    """An AMQP body exactly as published (v2 envelope or v1 bare dict) -> Notification."""
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        raise Rejected(f"body is {type(body).__name__}, not bytes")
    if isinstance(body, memoryview):
        body = bytes(body)
    _check_size(body, max_bytes)
    if not body or not body.strip():
        raise Rejected("body is empty")
    return decode_parsed(_loads(body, "body"))


def _is_capture(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and "body" in obj
        and ("exchange" in obj or "routing_key" in obj)
        and "oslo.message" not in obj
        and "event_type" not in obj
    )


def _capture_field(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise Rejected(f"capture {key} is not a string: {type(value).__name__}")


def _parse_line(line: bytes | str, max_bytes: int) -> tuple[Any, bytes | str, str | None, str | None]:
    """(decoded body, body as given, exchange, routing_key) of one input line."""
    if not isinstance(line, (bytes, bytearray, memoryview, str)):
        raise Rejected(f"line is {type(line).__name__}, not bytes")
    if isinstance(line, memoryview):
        line = bytes(line)
    line = line.strip()
    if not line:
        raise Rejected("empty line")
    _check_size(line, max_bytes + 1024)  # a capture line wraps its body in a little JSON
    obj = _loads(line, "line")
    if not _is_capture(obj):
        return obj, line, None, None
    exchange = _capture_field(obj, "exchange")
    routing_key = _capture_field(obj, "routing_key")
    body = obj["body"]
    if isinstance(body, (dict, list)):
        # a capture tool that stored the body already parsed; same notification, so take it
        return body, orjson.dumps(body), exchange, routing_key
    if not isinstance(body, str):
        raise Rejected(f"capture body is not a string but {_json_type(body)}")
    _check_size(body, max_bytes)
    if not body.strip():
        raise Rejected("capture body is empty")
    return _loads(body, "capture body"), body, exchange, routing_key


def read_line(line: bytes | str, *, max_bytes: int = MAX_BODY_BYTES) -> tuple[bytes, str | None, str | None]:
    """A `pipeline inspect` / file-source line -> (body as published, exchange, routing_key).

    The line is either a body as published or a capture object
    ``{"exchange": ..., "routing_key": ..., "body": "<body as a string>"}``. Raises Rejected.
    """
    _, body, exchange, routing_key = _parse_line(line, max_bytes)
    if isinstance(body, str):
        body = body.encode("utf-8")
    return bytes(body), exchange, routing_key


def decode_line(
    line: bytes | str, *, max_bytes: int = MAX_BODY_BYTES
) -> tuple[Notification, bytes, str | None, str | None]:
    """read_line + decode_body, parsing the JSON once: (notification, body, exchange, routing_key)."""
    obj, body, exchange, routing_key = _parse_line(line, max_bytes)
    if isinstance(body, str):
        body = body.encode("utf-8")
    return decode_parsed(obj), bytes(body), exchange, routing_key
