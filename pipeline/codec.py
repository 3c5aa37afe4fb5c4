"""Avro single-object encoding with the schemas in ``avro/``, bodies written and read by fastavro.

A value is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint of its parsing canonical form
(little-endian, as the Java implementation writes it) + the Avro binary body. ``--value-format
json`` values are plain orjson documents; readers tell the two apart by the marker (no JSON text
starts with byte C3).

Registry framing (``--avro-framing registry``), for consumers of a schema registry (Kafka Connect,
ksqlDB, Flink, kafka-ui): byte 0 + the schema's 4-byte big-endian registry id + the same Avro body.
`SchemaIds` caches the ids; the I/O shell (``pipeline.registry``) gives it the calls that ask the
registry on a miss, so the codec itself does no I/O. Decoders tell the framings apart by the first
byte (C3 or 00; JSON starts with neither).

The schemas themselves (``<repo>/avro/<name>.avsc``, found by name, fingerprint or full name) are
`pipeline.schemas`'; this module re-exports what its callers use of it.

The notification record carries ``timestamp`` as ``long`` / ``timestamp-micros`` and ``payload`` as
JSON text; `encode_event` / `decode_event` convert from / to the normalized event (RFC 3339 text,
payload as a JSON value).
"""
from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import orjson

from .schemas import CodecError, Schema, avro_dir, by_fingerprint, parse_writer, pinned, reader_for, schema

__all__ = [
    "FRAMINGS", "IDS", "MAGIC", "REGISTRY_MAGIC", "VALUE_FORMATS", "CodecError", "Encoder", "Schema", "SchemaIds",
    "avro_dir", "decode", "decode_event", "decode_value", "encode", "encode_event", "encode_value", "pinned",
    "parse_writer", "read_event", "schema",
]

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
REGISTRY_MAGIC = b"\x00"
REGISTRY_HEADER_LEN = 5
VALUE_FORMATS = ("avro", "json")
FRAMINGS = ("single-object", "registry")
NOTIFICATION = "notification"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


def _write(s: Schema, record: Mapping[str, Any], prefix: bytes | None = None) -> bytes:
    """The framing's prefix (single-object's by default) + the Avro binary body."""
    out = io.BytesIO()
    out.write(MAGIC + s.fingerprint if prefix is None else prefix)
    if s.writes_plain:
        fastavro.schemaless_writer(out, s.plain, _times_as_micros(s, record))
    else:
        fastavro.schemaless_writer(out, s.parsed, record)
    return out.getvalue()


def _times_as_micros(s: Schema, record: Mapping[str, Any]) -> Mapping[str, Any]:
    """`record` with its datetimes in timestamp fields as µs (a copy only when there are any)."""
    copied: dict[str, Any] | None = None
    for name in s.times:
        value = record.get(name)
        if isinstance(value, datetime):
            if copied is None:
                copied = dict(record)
            copied[name] = _micros_of(value)
    return record if copied is None else copied


def _micros_of(ts: datetime) -> int:
    if ts.tzinfo is None:  # naive: UTC, as this module reads text times (fastavro takes local time)
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _ONE_MICRO


def with_datetimes(schema_name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """A record whose times are µs (as the agents make them) -> a copy with those times as UTC
    datetimes: what a JSON value and the web views show (RFC 3339), and what Avro readers get."""
    out = dict(record)
    for name in schema(schema_name).times:
        value = out.get(name)
        if type(value) is int:
            out[name] = _EPOCH + timedelta(microseconds=value)
    return out


def _split(data: bytes) -> Schema:
    if len(data) < HEADER_LEN or data[:2] != MAGIC:
        raise CodecError("not an Avro single-object value (no C3 01 marker)")
    return by_fingerprint(bytes(data[2:HEADER_LEN]))


def _read(s: Schema, data: bytes, plain: bool = False, writer: Schema | None = None, start: int = HEADER_LEN) -> dict:
    """The body after `start`; `writer` when it was written with another version of `s`."""
    reader = s.plain if plain else s.parsed
    try:
        # a record schema reads a dict
        if writer is None or writer.canonical == s.canonical:
            return fastavro.schemaless_reader(io.BytesIO(data[start:]), reader, None)  # type: ignore[return-value]
        return fastavro.schemaless_reader(  # type: ignore[return-value]
            io.BytesIO(data[start:]), writer.plain if plain else writer.parsed, reader)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, SchemaResolutionError, ...
        raise CodecError(f"bad Avro body for schema {s.name!r}: {type(exc).__name__}: {exc}") from None


# --- registry framing ----------------------------------------------------------------------------


class SchemaIds:
    """The ids of registry framing: which id each subject's schema has (to write), and which
    schema each id names (to read). Filled by `learn`; on a miss it calls `register(subject,
    schema) -> id` or `fetch(id) -> schema JSON text`, which the shell provides (each runs once
    per subject or id, then the answer is cached)."""

    def __init__(self, register: Callable[[str, Schema], int] | None = None,
                 fetch: Callable[[int], str] | None = None) -> None:
        self.register = register
        self.fetch = fetch
        self._by_subject: dict[str, int] = {}
        self._writers: dict[int, Schema] = {}

    def learn(self, subject: str, schema_id: int, s: Schema) -> None:
        self._by_subject[subject] = schema_id
        self._writers[schema_id] = s

    def id_for(self, subject: str, s: Schema) -> int:
        found = self._by_subject.get(subject)
        if found is None:
            if self.register is None:
                raise CodecError(f"no schema registry to register subject {subject!r} with")
            found = self.register(subject, s)
            self.learn(subject, found, s)
        return found

    def writer(self, schema_id: int) -> Schema:
        found = self._writers.get(schema_id)
        if found is None:
            if self.fetch is None:
                raise CodecError(f"schema id {schema_id} is unknown here and no schema registry is set")
            found = self._writers[schema_id] = parse_writer(self.fetch(schema_id), f"id {schema_id}")
        return found


IDS = SchemaIds()  # the process's ids: what `Encoder` writes and the decoders below read


def _registry_split(data: bytes) -> tuple[Schema, Schema]:
    """A registry-framed value -> (our schema, the writer's)."""
    if len(data) < REGISTRY_HEADER_LEN:
        raise CodecError("registry-framed value shorter than its 5-byte header")
    writer = IDS.writer(int.from_bytes(data[1:REGISTRY_HEADER_LEN], "big"))
    return reader_for(writer), writer


class Encoder:
    """How one process writes values: JSON, or Avro in single-object or registry framing (the
    subject is ``<topic>-value``). Each call returns the value and its content-type header."""

    def __init__(self, value_format: str = "avro", framing: str = "single-object", ids: SchemaIds | None = None) -> None:
        if value_format not in VALUE_FORMATS:
            raise ValueError(f"unknown value format {value_format!r} (one of {', '.join(VALUE_FORMATS)})")
        if framing not in FRAMINGS:
            raise ValueError(f"unknown Avro framing {framing!r} (one of {', '.join(FRAMINGS)})")
        self.value_format = value_format
        self.registry = value_format == "avro" and framing == "registry"
        self.ids = ids or IDS
        self._prefixes: dict[tuple[bytes, str], tuple[bytes, bytes]] = {}  # -> (prefix, content type)

    def _prefix(self, s: Schema, topic: str) -> tuple[bytes, bytes]:
        key = (s.fingerprint, topic)  # the fingerprint, not the name: PIPELINE_AVRO_DIR may change a schema
        found = self._prefixes.get(key)
        if found is None:
            if self.registry:
                schema_id = self.ids.id_for(f"{topic}-value", s)
                found = (REGISTRY_MAGIC + schema_id.to_bytes(4, "big"),
                         f"avro/binary; schema={s.name}; framing=registry; id={schema_id}".encode())
            else:
                found = (MAGIC + s.fingerprint, f"avro/binary; schema={s.name}; fingerprint={s.fingerprint.hex()}".encode())
            self._prefixes[key] = found
        return found

    def value(self, schema_name: str, record: Mapping[str, Any], topic: str) -> tuple[bytes, bytes]:
        """`record`'s times may be datetimes or µs since the epoch; both give the same value."""
        if self.value_format == "json":
            return orjson.dumps(with_datetimes(schema_name, record)), b"application/json"
        s = schema(schema_name)
        prefix, content_type = self._prefix(s, topic)
        return _write(s, record, prefix), content_type

    def event(self, event: Mapping[str, Any], topic: str) -> tuple[bytes, bytes]:
        """A normalized event -> (the relay value, its content type)."""
        if self.value_format == "json":
            return orjson.dumps(event), b"application/json"
        return self.value(NOTIFICATION, _notification_record(event), topic)


def encode(schema_name: str, record: dict) -> bytes:
    """C3 01 + CRC-64-AVRO fingerprint (little-endian) + Avro binary body."""
    return _write(schema(schema_name), record)


def decode(data: bytes) -> tuple[str, dict]:
    """A single-object value (schema found by fingerprint) or a registry-framed one (by id) ->
    (schema name, record)."""
    if data[:1] == REGISTRY_MAGIC:
        s, writer = _registry_split(data)
        return s.name, _read(s, data, writer=writer, start=REGISTRY_HEADER_LEN)
    s = _split(data)
    return s.name, _read(s, data)


def _single_object(value_format: str) -> Encoder:
    found = _SINGLE_OBJECT.get(value_format)
    return found if found is not None else Encoder(value_format)  # raises for an unknown format


def encode_value(schema_name: str, record: dict, value_format: str = "avro") -> bytes:
    """A record -> its value in single-object encoding (or JSON); `Encoder` for registry framing."""
    return _single_object(value_format).value(schema_name, record, "")[0]


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"value is neither Avro single-object nor JSON: {exc}") from None


def decode_value(data: bytes) -> dict:
    """An Avro value in either framing, or a JSON value (auto-detected) -> record."""
    if data[:2] == MAGIC or data[:1] == REGISTRY_MAGIC:
        return decode(data)[1]
    record = _loads(data)
    if not isinstance(record, dict):
        raise CodecError("JSON value is not an object")
    return record


# --- the notification record ---------------------------------------------------------------------


def _micros(text: str) -> int:
    return _micros_of(datetime.fromisoformat(text))


def _rfc3339(micros: int) -> str:
    ts = _EPOCH + timedelta(microseconds=micros)
    return (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:"
        f"{ts.second:02d}.{ts.microsecond:06d}Z"
    )


def encode_event(event: Mapping[str, Any], value_format: str = "avro") -> bytes:
    """A normalized event (events.normalize) -> the relay value, in single-object encoding (or JSON)."""
    return _single_object(value_format).event(event, "")[0]


def _notification_record(event: Mapping[str, Any]) -> dict:
    record = dict(event)
    record["timestamp"] = _micros(event["timestamp"])
    record["payload"] = orjson.dumps(event["payload"]).decode()
    return record


def decode_event(data: bytes) -> dict:
    """A relay value (Avro in either framing, or JSON, auto-detected) -> the normalized event,
    payload parsed."""
    event, ts = _event(data)
    if ts is not None:
        event["timestamp"] = _rfc3339(ts)
    return event


def read_event(data: bytes) -> tuple[dict, int]:
    """A relay value -> (the event as `decode_event` gives it, its event time in µs), where the
    event's ``timestamp`` is left as the value has it: µs in Avro, the text in JSON. The worker
    reads only the µs; formatting them as text was a fiftieth of its time."""
    event, ts = _event(data)
    return event, _micros(event["timestamp"]) if ts is None else ts


def _event(data: bytes) -> tuple[dict, int | None]:
    """(the event, its Avro µs timestamp, or None for a JSON value: its ``timestamp`` is text)."""
    if data[:1] == REGISTRY_MAGIC:
        s, writer = _registry_split(data)
        start = REGISTRY_HEADER_LEN
    elif data[:2] == MAGIC:
        s, writer, start = _split(data), None, HEADER_LEN
    else:
        event = _loads(data)
        if not isinstance(event, dict):
            raise CodecError("JSON value is not an object")
        return event, None
    if s.name != NOTIFICATION:
        raise CodecError(f"value is a {s.name!r} record, not a notification")
    event = _read(s, data, plain=True, writer=writer, start=start)
    event["payload"] = _loads(event["payload"])
    return event, event["timestamp"]


_SINGLE_OBJECT = {value_format: Encoder(value_format) for value_format in VALUE_FORMATS}
