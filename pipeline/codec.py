"""Avro single-object encoding with the schemas in ``avro/``; fastavro on the hot path.

A value is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint of its parsing canonical form
(little-endian, as the Java implementation writes it) + the Avro binary body. ``--value-format
json`` values are plain orjson documents; readers tell the two apart by the marker (no JSON text
starts with byte C3).

Schemas are ``<repo>/avro/<name>.avsc``; ``PIPELINE_AVRO_DIR`` points elsewhere (e.g. in a
container image where the package is installed without the repo).

The notification record carries ``timestamp`` as ``long`` / ``timestamp-micros`` and ``payload`` as
JSON text; `encode_event` / `decode_event` convert from / to the normalized event (RFC 3339 text,
payload as a JSON value).
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = [
    "MAGIC",
    "CodecError",
    "Schema",
    "avro_dir",
    "decode",
    "decode_event",
    "decode_value",
    "encode",
    "encode_event",
    "encode_value",
    "schema",
    "VALUE_FORMATS",
]

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
VALUE_FORMATS = ("avro", "json")
NOTIFICATION = "notification"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)


class CodecError(ValueError):
    """A value that cannot be decoded (or a schema that cannot be found). `reason`: one line."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(reason.split())
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Schema:
    name: str  # the file stem: "notification"
    parsed: Any  # fastavro parsed schema (logical types applied)
    plain: Any  # the same without logical types: raw longs, for decode_event's own formatting
    canonical: str  # parsing canonical form
    fingerprint: bytes  # 8 bytes, CRC-64-AVRO, little-endian


def avro_dir() -> Path:
    override = os.environ.get("PIPELINE_AVRO_DIR")
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parent.parent / "avro"
    # In a non-editable install the folder beside the package is site-packages/avro: Apache's
    # avro library, not our schemas. Say so instead of failing on a missing file later.
    if not (beside / "notification.avsc").is_file():
        raise CodecError(f"the Avro schemas are not in {beside}: set PIPELINE_AVRO_DIR to the repository's avro/ folder")
    return beside


_BY_NAME: dict[str, Schema] = {}
_BY_FINGERPRINT: dict[bytes, Schema] = {}
_LOADED_FROM: Path | None = None
_LOADED_ENV: str | None = None


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


def _load(path: Path) -> Schema:
    try:
        raw = orjson.loads(path.read_bytes())
        parsed = fastavro.parse_schema(raw)
        plain = fastavro.parse_schema(_strip_logical(raw))
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise CodecError(f"cannot load Avro schema {path}: {exc}") from None
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return Schema(path.stem, parsed, plain, canonical, fp)


def _check_dir() -> Path:
    """Drop the cache when PIPELINE_AVRO_DIR changed (tests point it elsewhere)."""
    global _LOADED_FROM, _LOADED_ENV
    override = os.environ.get("PIPELINE_AVRO_DIR")
    if _LOADED_FROM is not None and override == _LOADED_ENV:
        return _LOADED_FROM
    _BY_NAME.clear()
    _BY_FINGERPRINT.clear()
    _LOADED_ENV = override
    _LOADED_FROM = avro_dir()
    return _LOADED_FROM


def _register(s: Schema) -> Schema:
    _BY_NAME[s.name] = s
    _BY_FINGERPRINT[s.fingerprint] = s
    return s


def schema(name: str) -> Schema:
    """The schema ``avro/<name>.avsc``, loaded once."""
    directory = _check_dir()
    found = _BY_NAME.get(name)
    if found is not None:
        return found
    path = directory / f"{name}.avsc"
    if not path.is_file():
        raise CodecError(f"no Avro schema {name!r} in {directory}")
    return _register(_load(path))


def _by_fingerprint(fp: bytes) -> Schema:
    directory = _check_dir()
    found = _BY_FINGERPRINT.get(fp)
    if found is None:  # a schema added since we last looked
        for path in sorted(directory.glob("*.avsc")):
            if path.stem not in _BY_NAME:
                _register(_load(path))
        found = _BY_FINGERPRINT.get(fp)
    if found is None:
        raise CodecError(f"no Avro schema with fingerprint {fp.hex()} in {directory}")
    return found


def _write(s: Schema, record: dict) -> bytes:
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(s.fingerprint)
    fastavro.schemaless_writer(out, s.parsed, record)
    return out.getvalue()


def _split(data: bytes) -> Schema:
    if len(data) < HEADER_LEN or data[:2] != MAGIC:
        raise CodecError("not an Avro single-object value (no C3 01 marker)")
    return _by_fingerprint(bytes(data[2:HEADER_LEN]))


def _read(s: Schema, data: bytes, plain: bool = False) -> dict:
    try:
        return fastavro.schemaless_reader(io.BytesIO(data[HEADER_LEN:]), s.plain if plain else s.parsed, None)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        raise CodecError(f"bad Avro body for schema {s.name!r}: {type(exc).__name__}: {exc}") from None


def encode(schema_name: str, record: dict) -> bytes:
    """C3 01 + CRC-64-AVRO fingerprint (little-endian) + Avro binary body."""
    return _write(schema(schema_name), record)


def decode(data: bytes) -> tuple[str, dict]:
    """A single-object value -> (schema name, record); the schema is found by fingerprint."""
    s = _split(data)
    return s.name, _read(s, data)


def encode_value(schema_name: str, record: dict, value_format: str = "avro") -> bytes:
    if value_format == "avro":
        return encode(schema_name, record)
    if value_format == "json":
        return orjson.dumps(record)
    raise ValueError(f"unknown value format {value_format!r} (one of {', '.join(VALUE_FORMATS)})")


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"value is neither Avro single-object nor JSON: {exc}") from None


def decode_value(data: bytes) -> dict:
    """An Avro single-object or JSON value (auto-detected) -> record."""
    if data[:2] == MAGIC:
        return decode(data)[1]
    record = _loads(data)
    if not isinstance(record, dict):
        raise CodecError("JSON value is not an object")
    return record


# --- the notification record ---------------------------------------------------------------------


def _micros(text: str) -> int:
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _ONE_MICRO


def _rfc3339(micros: int) -> str:
    ts = _EPOCH + timedelta(microseconds=micros)
    return (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:"
        f"{ts.second:02d}.{ts.microsecond:06d}Z"
    )


def encode_event(event: Mapping[str, Any], value_format: str = "avro") -> bytes:
    """A normalized event (events.normalize) -> the relay value."""
    if value_format == "json":
        return orjson.dumps(event)
    if value_format != "avro":
        raise ValueError(f"unknown value format {value_format!r} (one of {', '.join(VALUE_FORMATS)})")
    record = dict(event)
    record["timestamp"] = _micros(event["timestamp"])
    record["payload"] = orjson.dumps(event["payload"]).decode()
    return _write(schema(NOTIFICATION), record)


def decode_event(data: bytes) -> dict:
    """A relay value (Avro or JSON, auto-detected) -> the normalized event, payload parsed."""
    if data[:2] != MAGIC:
        event = _loads(data)
        if not isinstance(event, dict):
            raise CodecError("JSON value is not an object")
        return event
    s = _split(data)
    if s.name != NOTIFICATION:
        raise CodecError(f"value is a {s.name!r} record, not a notification")
    event = _read(s, data, plain=True)
    event["timestamp"] = _rfc3339(event["timestamp"])
    event["payload"] = _loads(event["payload"].encode())
    return event
