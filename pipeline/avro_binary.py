"""Avro binary bodies of flat records, written and read in plain Python: the codec's hot path.

The project's records are flat: strings, longs, booleans and ``timestamp-micros`` longs, each maybe
in a ``["null", X]`` union. fastavro handles any schema but spends most of a record on per-field
dispatch and union validation (about 15 µs for a node-state record); walking a precomputed field
list costs a third of that. `layout` says whether a schema is of this shape (else None: the codec
keeps fastavro for it); `write` and `read` return None for a value they do not handle exactly as
fastavro would (a type they do not expect, a long beyond 64 bits, a malformed body), and the codec
then lets fastavro write it or raise its error. Bytes are the same as fastavro's (and Apache's):
tests/unit/test_avro_binary.py holds the two writers and readers to each other.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Layout", "layout", "read", "write"]

STRING, LONG, BOOLEAN, TIMESTAMP = range(4)
_KINDS = {"string": STRING, "long": LONG, "boolean": BOOLEAN}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICRO = timedelta(microseconds=1)
_MIN_LONG, _MAX_LONG = -(1 << 63), (1 << 63) - 1

Layout = tuple[tuple[str, int, bool], ...]  # (field name, kind, nullable) in schema order


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(_zigzag(n) for n in range(4096))  # lengths and small longs: most of what is written
# Timestamps recur (a node's change times are in each of its records): their bytes, by datetime.
_TIMES: dict[datetime, bytes] = {}
_TIMES_MAX = 65536


def _kind(node: Any) -> int | None:
    if isinstance(node, str):
        return _KINDS.get(node)
    if isinstance(node, dict):
        if node.get("logicalType") == "timestamp-micros" and node.get("type") == "long":
            return TIMESTAMP
        if set(node) == {"type"}:
            return _kind(node["type"])
    return None


def layout(parsed: Any) -> Layout | None:
    """The field list of a flat record schema (fastavro-parsed), or None when it is not flat."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    fields = []
    for f in parsed.get("fields", ()):
        t, nullable = f["type"], False
        if isinstance(t, list):
            if len(t) != 2 or t[0] != "null":
                return None
            t, nullable = t[1], True
        kind = _kind(t)
        if kind is None:
            return None
        fields.append((f["name"], kind, nullable))
    return tuple(fields)


def _long(v: int) -> bytes | None:
    if 0 <= v < 4096:
        return _SMALL[v]
    return _zigzag(v) if _MIN_LONG <= v <= _MAX_LONG else None


def write(fields: Layout, record: dict, prefix: bytes) -> bytes | None:
    """`prefix` + the record's Avro body; None for a value fastavro should handle."""
    parts = [prefix]
    add = parts.append
    small = _SMALL
    for name, kind, nullable in fields:
        v: Any = record.get(name)
        if nullable:
            if v is None:
                add(b"\x00")
                continue
            add(b"\x02")
        tv = type(v)
        if kind == STRING:
            if tv is not str:
                return None
            b = v.encode()
            n = len(b)
            add(small[n] if n < 4096 else _zigzag(n))
            add(b)
            continue
        if kind == BOOLEAN:
            if tv is not bool:
                return None
            add(b"\x01" if v else b"\x00")
            continue
        if kind == TIMESTAMP and tv is datetime:
            encoded = _TIMES.get(v)
            if encoded is None:
                if v.tzinfo is None:  # fastavro's own rule for naive times
                    return None
                encoded = _long((v - _EPOCH) // _ONE_MICRO)
                if encoded is None:
                    return None
                if len(_TIMES) >= _TIMES_MAX:
                    _TIMES.clear()
                _TIMES[v] = encoded
            add(encoded)
            continue
        if tv is not int:
            return None
        encoded = _long(v)
        if encoded is None:
            return None
        add(encoded)
    return b"".join(parts)


def read(fields: Layout, data: bytes, start: int) -> dict | None:
    """The record of the body at `data[start:]` (timestamps as raw longs); None when it is not
    well formed (fastavro then says why)."""
    out: dict[str, Any] = {}
    pos = start
    try:
        for name, kind, nullable in fields:
            if nullable:
                branch = data[pos]
                pos += 1
                if branch == 0:
                    out[name] = None
                    continue
                if branch != 2:
                    return None
            if kind == BOOLEAN:
                b = data[pos]
                pos += 1
                if b > 1:
                    return None
                out[name] = b == 1
                continue
            b = data[pos]
            pos += 1
            n = b & 0x7F
            shift = 7
            while b & 0x80:
                if shift > 63:  # more than the 10 bytes of a 64-bit long
                    return None
                b = data[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
            if n >> 64:
                return None
            n = (n >> 1) ^ -(n & 1)
            if kind == STRING:
                end = pos + n
                if n < 0 or end > len(data):
                    return None
                out[name] = data[pos:end].decode()
                pos = end
            else:
                out[name] = n
    except (IndexError, UnicodeDecodeError):
        return None
    return out
