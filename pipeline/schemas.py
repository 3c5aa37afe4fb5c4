"""The record schemas in ``avro/``: loaded once per directory, found by name, by fingerprint (the
single-object framing's key) or by full name (the reader of a registry id's writer), and a writer's
schema of another version parsed to read its records. No I/O but reading the ``.avsc`` files.

``PIPELINE_AVRO_DIR`` points elsewhere than ``<repo>/avro`` (e.g. in a container image where the
package is installed without the repo). Every lookup looks at the variable again (tests change it
in-process), except inside `pinned()`: the worker folds a batch of records in one, so the
environment is read once per batch instead of twice per record.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

__all__ = ["CodecError", "Schema", "avro_dir", "by_fingerprint", "parse_writer", "pinned", "reader_for", "schema"]


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
    text: str = ""  # the .avsc as compact JSON, defaults and docs kept: what a registry is given
    fullname: str = ""  # namespace.name of the record
    times: tuple[str, ...] = ()  # the record's timestamp-micros fields (nullable or not)
    # written through `plain` with the times as µs: the same bytes (Avro writes a timestamp-micros
    # as its long), without fastavro's per-field logical-type and union checks, a fifth of a
    # node-state record's write. Only when the times are the schema's only logical types.
    writes_plain: bool = False


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
_BY_FULLNAME: dict[str, Schema] = {}  # record full name -> our schema, the reader of a registry id
_LOADED_FROM: Path | None = None
_LOADED_ENV: str | None = None
_PINNED: Path | None = None  # inside `pinned()`: the directory, without looking at the environment


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
    return _schema(path.stem, raw, parsed, plain)


def _logical_types(node: Any) -> int:
    if isinstance(node, dict):
        return ("logicalType" in node) + sum(_logical_types(v) for v in node.values())
    if isinstance(node, list):
        return sum(_logical_types(v) for v in node)
    return 0


def _time_fields(raw: Any) -> tuple[str, ...]:
    """The top-level fields typed timestamp-micros, or a union of null and it."""
    def is_time(t: Any) -> bool:
        return isinstance(t, dict) and t.get("logicalType") == "timestamp-micros" and t.get("type") == "long"

    fields = raw.get("fields", []) if isinstance(raw, dict) else []
    return tuple(f["name"] for f in fields
                 if is_time(f["type"]) or (isinstance(f["type"], list) and any(is_time(t) for t in f["type"])))


def _schema(name: str, raw: Any, parsed: Any, plain: Any) -> Schema:
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    fullname = parsed.get("name", "") if isinstance(parsed, dict) else ""
    times = _time_fields(raw)
    return Schema(name, parsed, plain, canonical, fp, orjson.dumps(raw).decode(), fullname, times,
                  writes_plain=_logical_types(raw) == len(times))


def _check_dir() -> Path:
    """Drop the cache when PIPELINE_AVRO_DIR changed (tests point it elsewhere)."""
    global _LOADED_FROM, _LOADED_ENV
    if _PINNED is not None:
        return _PINNED
    override = os.environ.get("PIPELINE_AVRO_DIR")
    if _LOADED_FROM is not None and override == _LOADED_ENV:
        return _LOADED_FROM
    _BY_NAME.clear()
    _BY_FINGERPRINT.clear()
    _BY_FULLNAME.clear()
    _LOADED_ENV = override
    _LOADED_FROM = avro_dir()
    return _LOADED_FROM


@contextmanager
def pinned() -> Iterator[None]:
    """Within: PIPELINE_AVRO_DIR is read once, on entry (a change meanwhile is seen after exit)."""
    global _PINNED
    if _PINNED is not None:  # nested: the outer one's directory
        yield
        return
    _PINNED = _check_dir()
    try:
        yield
    finally:
        _PINNED = None


def _register(s: Schema) -> Schema:
    _BY_NAME[s.name] = s
    _BY_FINGERPRINT[s.fingerprint] = s
    _BY_FULLNAME[s.fullname] = s
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


def _load_new(directory: Path) -> None:
    for path in sorted(directory.glob("*.avsc")):
        if path.stem not in _BY_NAME:
            _register(_load(path))


def by_fingerprint(fp: bytes) -> Schema:
    directory = _check_dir()
    found = _BY_FINGERPRINT.get(fp)
    if found is None:  # a schema added since we last looked
        _load_new(directory)
        found = _BY_FINGERPRINT.get(fp)
    if found is None:
        raise CodecError(f"no Avro schema with fingerprint {fp.hex()} in {directory}")
    return found


def parse_writer(text: str, label: str) -> Schema:
    """A writer's schema (from a registry, or an old .avsc) as a `Schema` to read its records."""
    try:
        raw = orjson.loads(text)
        return _schema(label, raw, fastavro.parse_schema(raw), fastavro.parse_schema(_strip_logical(raw)))
    except (ValueError, fastavro.schema.SchemaParseException) as exc:
        raise CodecError(f"schema {label} is not an Avro schema: {exc}") from None


def reader_for(writer: Schema) -> Schema:
    """Our schema for the record a writer's schema describes (same full name)."""
    directory = _check_dir()
    found = _BY_FULLNAME.get(writer.fullname)
    if found is None:  # not loaded yet
        _load_new(directory)
        found = _BY_FULLNAME.get(writer.fullname)
    if found is None:
        raise CodecError(f"no Avro schema for record {writer.fullname!r} in {directory}")
    return found
