"""codec: single-object encoding written by fastavro, read back by the Apache reference implementation."""
from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import avro.io
import avro.schema
import fastavro
import orjson
import pytest

from pipeline import codec, events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RESEARCH = (FIXTURES / "research_bodies.jsonl").read_bytes().splitlines()
SCHEMA_TEXT = (codec.avro_dir() / "notification.avsc").read_text()


def _without_logical_types(node):
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def apache_read(value: bytes, schema_text: str = SCHEMA_TEXT) -> dict:
    reader = avro.io.DatumReader(avro.schema.parse(schema_text))
    return reader.read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))


@pytest.fixture(params=range(len(RESEARCH)))
def event(request) -> dict:
    return events.normalize(RESEARCH[request.param])


def test_single_object_header_and_fingerprint(event):
    value = codec.encode_event(event)
    assert value[:2] == b"\xc3\x01"
    s = codec.schema("notification")
    assert value[2:10] == s.fingerprint
    # Apache avro's fingerprint of the same schema. Its Python canonical form keeps a primitive that
    # carries a logicalType as {"type":"long"}, where the specification (and Java's
    # SchemaNormalization) writes "long"; compared on the form without logical types they agree.
    plain = json.dumps(_without_logical_types(json.loads(SCHEMA_TEXT)))
    assert avro.schema.parse(plain).fingerprint("CRC-64-AVRO") == s.fingerprint
    apache = avro.schema.parse(SCHEMA_TEXT)
    assert apache.fingerprint("CRC-64-AVRO") == s.fingerprint or '{"type":"long"}' in apache.canonical_form
    assert '"long"' in s.canonical and "logicalType" not in s.canonical


def test_apache_avro_reads_what_fastavro_wrote(event):
    record = apache_read(codec.encode_event(event))
    expected = dict(event)
    expected["payload"] = orjson.dumps(event["payload"]).decode()
    ts = record.pop("timestamp")
    assert isinstance(ts, datetime) and ts.tzinfo is not None
    assert ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") == expected.pop("timestamp")
    assert record == expected
    assert orjson.loads(record["payload"]) == event["payload"]


def test_fastavro_reads_what_apache_avro_wrote(event):
    record = dict(event)
    record["timestamp"] = datetime.fromisoformat(event["timestamp"])
    record["payload"] = orjson.dumps(event["payload"]).decode()
    out = io.BytesIO()
    avro.io.DatumWriter(avro.schema.parse(SCHEMA_TEXT)).write(record, avro.io.BinaryEncoder(out))
    value = b"\xc3\x01" + codec.schema("notification").fingerprint + out.getvalue()
    assert value == codec.encode_event(event)
    assert codec.decode_event(value) == event


def test_round_trips(event):
    assert codec.decode_event(codec.encode_event(event)) == event
    assert codec.decode_event(codec.encode_event(event, "json")) == event
    name, record = codec.decode(codec.encode_event(event))
    assert name == "notification" and record["message_id"] == event["message_id"]
    assert codec.decode_value(codec.encode_event(event, "json"))["topic"] == event["topic"]


def test_string_payload_is_json_text():
    event = events.normalize(RESEARCH[1])  # image.upload ERROR, payload a plain string
    record = apache_read(codec.encode_event(event))
    assert record["payload"] == orjson.dumps(event["payload"]).decode()
    assert record["payload"].startswith('"Image storage media is full')


def test_encode_value_and_decode_value_generic():
    event = events.normalize(RESEARCH[0])
    record = dict(event, timestamp=datetime(2026, 1, 1, tzinfo=UTC), payload="{}")
    value = codec.encode_value("notification", record)
    assert codec.decode_value(value)["timestamp"] == record["timestamp"]
    assert orjson.loads(codec.encode_value("notification", {"a": 1}, "json")) == {"a": 1}
    with pytest.raises(ValueError, match="unknown value format"):
        codec.encode_value("notification", {}, "xml")
    with pytest.raises(ValueError, match="unknown value format"):
        codec.encode_event(event, "xml")


@pytest.mark.parametrize("data, words", [
    (b"\xc3\x01\x00\x00\x00\x00\x00\x00\x00\x00body", "no Avro schema with fingerprint"),
    (b"\xc3\x01\x00", "not an Avro single-object"),
    (b"garbage", "neither Avro single-object nor JSON"),
    (b"[1]", "not an object"),
])
def test_decode_errors(data, words):
    with pytest.raises(codec.CodecError, match=words):
        codec.decode_value(data)


def test_truncated_body():
    value = codec.encode_event(events.normalize(RESEARCH[0]))
    with pytest.raises(codec.CodecError, match="bad Avro body"):
        codec.decode_event(value[:40])


def test_unknown_schema_name():
    with pytest.raises(codec.CodecError, match="no Avro schema 'nope'"):
        codec.encode("nope", {})


def test_avro_dir_override(tmp_path, monkeypatch):
    (tmp_path / "point.avsc").write_text(json.dumps(
        {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "int"}]}))
    monkeypatch.setenv("PIPELINE_AVRO_DIR", str(tmp_path))
    value = codec.encode("point", {"x": 7})
    assert codec.decode(value) == ("point", {"x": 7})
    assert apache_read(value, (tmp_path / "point.avsc").read_text()) == {"x": 7}
    with pytest.raises(codec.CodecError, match="no Avro schema 'notification'"):
        codec.schema("notification")
    monkeypatch.delenv("PIPELINE_AVRO_DIR")
    assert codec.schema("notification").name == "notification"


def test_pinned_reads_the_avro_dir_once(tmp_path, monkeypatch):
    """Inside `pinned()` (the worker's batch) the directory is the one of its entry; after, the
    variable is read again on every call."""
    (tmp_path / "point.avsc").write_text(json.dumps(
        {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "int"}]}))
    with codec.pinned():
        monkeypatch.setenv("PIPELINE_AVRO_DIR", str(tmp_path))
        assert codec.schema("notification").name == "notification"
        with pytest.raises(codec.CodecError, match="no Avro schema 'point'"):
            codec.schema("point")
        with codec.pinned():  # nested: still the outer one's
            assert codec.schema("notification").name == "notification"
    assert codec.decode(codec.encode("point", {"x": 7})) == ("point", {"x": 7})
    with pytest.raises(codec.CodecError, match="no Avro schema 'notification'"):
        codec.schema("notification")
    monkeypatch.delenv("PIPELINE_AVRO_DIR")
    assert codec.schema("notification").name == "notification"


def test_schema_added_later_is_found_by_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_AVRO_DIR", str(tmp_path))
    (tmp_path / "a.avsc").write_text('{"type": "record", "name": "A", "fields": [{"name": "a", "type": "string"}]}')
    codec.schema("a")
    (tmp_path / "b.avsc").write_text('{"type": "record", "name": "B", "fields": [{"name": "b", "type": "long"}]}')
    other = io.BytesIO()
    avro.io.DatumWriter(avro.schema.parse((tmp_path / "b.avsc").read_text())).write({"b": 5}, avro.io.BinaryEncoder(other))
    fp = avro.schema.parse((tmp_path / "b.avsc").read_text()).fingerprint("CRC-64-AVRO")
    assert codec.decode(b"\xc3\x01" + fp + other.getvalue()) == ("b", {"b": 5})


# --- times: the agents' records carry µs, readers get datetimes ---------------------------------

NODE_TIMES = ("updated_at", "power_changed_at", "provision_changed_at", "maintenance_changed_at",
              "last_error_changed_at", "console_changed_at", "deleted_changed_at")


def _node_state(**times) -> dict:
    fields = codec.schema("node_state").parsed["fields"]
    record = {f["name"]: None for f in fields}
    record.update(node_uuid="n1", power_state="power on", deleted=False, **times)
    return record


def test_times_in_micros_write_the_bytes_fastavros_logical_writer_writes():
    """A record's times as µs (the agents') or as datetimes (anyone else's) give the same value,
    byte for byte the one fastavro's own timestamp-micros writer makes, and read back as datetimes."""
    s = codec.schema("node_state")
    assert s.times == NODE_TIMES and s.writes_plain
    at = datetime(2026, 11, 22, 0, 0, 44, 350366, tzinfo=UTC)
    us = 1795305644350366
    as_datetimes = _node_state(updated_at=at, power_changed_at=at)
    as_micros = _node_state(updated_at=us, power_changed_at=us)
    logical = io.BytesIO()
    fastavro.schemaless_writer(logical, s.parsed, as_datetimes)
    value = codec.encode("node_state", as_micros)
    assert value == codec.encode("node_state", as_datetimes) == codec.MAGIC + s.fingerprint + logical.getvalue()
    assert codec.decode(value)[1] == as_datetimes == codec.with_datetimes("node_state", as_micros)
    assert codec.encode_value("node_state", as_micros, "json") == orjson.dumps(as_datetimes)


def test_a_schema_with_other_logical_types_writes_through_fastavros_logical_writer(tmp_path, monkeypatch):
    (tmp_path / "day.avsc").write_text(json.dumps({"type": "record", "name": "Day", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}}]}))
    monkeypatch.setenv("PIPELINE_AVRO_DIR", str(tmp_path))
    s = codec.schema("day")
    assert s.times == ("at",) and not s.writes_plain
    record = {"at": datetime(2026, 1, 1, tzinfo=UTC), "day": datetime(2026, 1, 2).date()}
    assert codec.decode(codec.encode("day", record)) == ("day", record)
