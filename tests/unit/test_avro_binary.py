"""avro_binary writes the bytes fastavro writes and reads what fastavro reads, for every schema in
avro/; what it does not handle it leaves to fastavro (None), never to a different answer."""
from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import avro_binary, codec

NAMES = ("notification", "operation", "alert", "node_state")
_LONGS = st.integers(-(1 << 63), (1 << 63) - 1)
_TIMES = st.one_of(_LONGS, st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])))
_VALUES = {avro_binary.STRING: st.text(), avro_binary.LONG: _LONGS, avro_binary.BOOLEAN: st.booleans(),
           avro_binary.TIMESTAMP: _TIMES}


def _fastavro(s: codec.Schema, record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, s.parsed, record)
    return out.getvalue()


def _records(name: str):
    s = codec.schema(name)
    assert s.layout is not None, f"{name} is not flat any more: the codec would fall back to fastavro"
    fields = {f: (st.one_of(st.none(), _VALUES[kind]) if nullable else _VALUES[kind])
              for f, kind, nullable in s.layout}
    return st.fixed_dictionaries(fields)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_same_bytes_as_fastavro_and_read_back(name, data) -> None:
    s = codec.schema(name)
    record = data.draw(_records(name))
    body = _fastavro(s, record)
    assert avro_binary.write(s.layout, record, b"P") == b"P" + body
    expected = fastavro.schemaless_reader(io.BytesIO(body), s.plain, None)
    assert avro_binary.read(s.layout, b"xx" + body, 2) == expected


@pytest.mark.parametrize("value", [datetime(2026, 1, 1), 1 << 63, -(1 << 63) - 1, True, 3.0, "7"])
def test_values_it_does_not_handle_are_left_to_fastavro(value) -> None:
    s = codec.schema("operation")
    record = {f: None for f, _, _ in s.layout} | {
        "op_id": "a", "resource_uuid": "r", "operation": "deploy", "outcome": "success", "publisher_id": "p",
        "late": False, "duration_ms": value}
    assert avro_binary.write(s.layout, record, b"") is None
    record["duration_ms"] = None
    record["started_at"] = value
    assert avro_binary.write(s.layout, record, b"") is None


def test_a_malformed_body_is_left_to_fastavro() -> None:
    s = codec.schema("notification")
    body = codec.encode_event({
        "message_id": "m", "event_type": "e", "priority": "info", "publisher_id": "p",
        "timestamp": "2026-01-01T00:00:00.000000Z", "service": "s", "family": "f", "resource_uuid": None,
        "node_uuid": None, "action": "a", "phase": None, "operation": None, "payload_name": None,
        "payload_version": None, "topic": "t", "payload": {}})
    assert avro_binary.read(s.layout, body, codec.HEADER_LEN) is not None
    for cut in range(codec.HEADER_LEN, len(body)):
        assert avro_binary.read(s.layout, body[:cut], codec.HEADER_LEN) is None
    with pytest.raises(codec.CodecError, match="bad Avro body"):
        codec.decode_event(body[:-1])
    event = codec.decode_event(body)
    event["timestamp"] = 1_767_225_600_000_000  # 2026-01-01, as written
    before = s.layout[:[f[0] for f in s.layout].index("resource_uuid")]
    at = codec.HEADER_LEN + len(avro_binary.write(before, event, b"") or b"")
    bad_branch = bytearray(body)
    assert bad_branch[at] == 0  # resource_uuid's union index: null
    bad_branch[at] = 4
    assert avro_binary.read(s.layout, bytes(bad_branch), codec.HEADER_LEN) is None


def test_schemas_that_are_not_flat_have_no_layout() -> None:
    assert avro_binary.layout({"type": "record", "name": "A", "fields": [
        {"name": "a", "type": {"type": "array", "items": "string"}}]}) is None
    assert avro_binary.layout({"type": "record", "name": "A", "fields": [
        {"name": "a", "type": ["string", "null"]}]}) is None
    assert avro_binary.layout({"type": "record", "name": "A", "fields": [
        {"name": "a", "type": {"type": "int"}}]}) is None
    assert avro_binary.layout("string") is None
