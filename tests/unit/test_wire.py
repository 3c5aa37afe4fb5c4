"""wire: the two body shapes, timestamps, priorities, context, and clear rejections."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from pipeline import wire
from pipeline.wire import Rejected

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RESEARCH = (FIXTURES / "research_bodies.jsonl").read_bytes().splitlines()  # verbatim captures


def inner(**over) -> dict:
    msg = {
        "message_id": "55e3d855-c4b9-4332-8005-7a5bfe247bc7",
        "publisher_id": "ironic-conductor.c1",
        "event_type": "baremetal.node.power_set.start",
        "priority": "INFO",
        "payload": {"ironic_object.data": {"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"}},
        "timestamp": "2026-11-22 01:11:48.287830",
    }
    msg.update(over)
    return {k: v for k, v in msg.items() if v is not ...}


def v2(msg: dict, version: str = "2.0") -> bytes:
    return orjson.dumps({"oslo.version": version, "oslo.message": orjson.dumps(msg).decode()})


def reason(body) -> str:
    with pytest.raises(Rejected) as info:
        wire.decode_body(body)
    assert "\n" not in info.value.reason and info.value.reason == str(info.value)
    return info.value.reason


def test_research_capture_v2_with_context():
    n = wire.decode_body(RESEARCH[0])
    assert n.event_type == "baremetal.node.power_set.start"
    assert n.priority == "info"
    assert n.message_id == "55e3d855-c4b9-4332-8005-7a5bfe247bc7"
    assert n.publisher_id == "ironic-conductor.conductor-1.example.org"
    assert n.timestamp == datetime(2026, 11, 22, 1, 11, 48, 287830, tzinfo=UTC)
    assert n.unique_id == "53ac7243b1f644fb8074105cbc86a35c"
    assert n.context["request_id"] == "req-6c2b8d2e-0d1e-4a55-9a8e-2b1a5c7e9f00"
    assert "auth_token" not in n.context and "auth_token_info" not in n.context
    assert set(n.payload) == {"ironic_object.name", "ironic_object.namespace", "ironic_object.version",
                              "ironic_object.data"}


def test_research_capture_string_payload_and_v1_and_kafka_driver():
    upload_error = wire.decode_body(RESEARCH[1])
    assert upload_error.priority == "error"
    assert upload_error.payload.startswith("Image storage media is full")
    v1 = wire.decode_body(RESEARCH[4])
    assert v1.event_type == "test.v1" and v1.payload == {"k": "v"}  # _unique_id/_context_* not payload
    assert v1.context["user"] == "u1" and v1.unique_id == "26df56b8543c490fbdc8f232fed3471a"
    kafka = wire.decode_body(RESEARCH[5])
    assert kafka.context["request_id"] == "req-1111" and kafka.unique_id is None


def test_str_and_bytes_bodies_decode_alike():
    assert wire.decode_body(RESEARCH[2]) == wire.decode_body(RESEARCH[2].decode())


@pytest.mark.parametrize("text, expected", [
    ("2026-11-22 01:09:39.839084", datetime(2026, 11, 22, 1, 9, 39, 839084)),
    ("2026-08-20 18:00:00", datetime(2026, 8, 20, 18)),  # microsecond 0: str() prints no fraction
    ("2026-08-20 18:00:00.5", datetime(2026, 8, 20, 18, 0, 0, 500000)),
    ("2026-08-20T18:00:00Z", datetime(2026, 8, 20, 18)),
    ("2026-08-20T18:00:00.123Z", datetime(2026, 8, 20, 18, 0, 0, 123000)),
    ("2026-08-20T20:00:00+02:00", datetime(2026, 8, 20, 18)),
    ("2026-08-20T18:00:00+00:00", datetime(2026, 8, 20, 18)),
])
def test_timestamps(text, expected):
    ts = wire.decode_body(v2(inner(timestamp=text))).timestamp
    assert ts == expected.replace(tzinfo=UTC)
    assert ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize("bad", ["2026-13-01 00:00:00", "yesterday", "", "2026-08-20", 1732237779, None,
                                 "2026-08-20 25:00:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_bad_timestamps(bad):
    assert "timestamp" in reason(v2(inner(timestamp=bad)))


@pytest.mark.parametrize("raw, expected", [
    ("AUDIT", "audit"), ("DEBUG", "debug"), ("INFO", "info"), ("WARN", "warn"), ("ERROR", "error"),
    ("CRITICAL", "critical"), ("SAMPLE", "sample"), ("info", "info"), ("WARNING", "warn"),
])
def test_priorities(raw, expected):
    assert wire.decode_body(v2(inner(priority=raw))).priority == expected


@pytest.mark.parametrize("raw", ["NOTICE", "", 3, None, "INFO "])
def test_bad_priorities(raw):
    assert "priority" in reason(v2(inner(priority=raw)))


@pytest.mark.parametrize("field", ["message_id", "event_type", "priority", "timestamp", "payload"])
def test_required_fields(field):
    assert f"missing {field}" == reason(v2(inner(**{field: ...})))


@pytest.mark.parametrize("field", ["message_id", "event_type"])
def test_required_strings(field):
    assert field in reason(v2(inner(**{field: 42})))
    assert field in reason(v2(inner(**{field: ""})))


def test_publisher_missing_or_null_is_empty():
    assert wire.decode_body(v2(inner(publisher_id=...))).publisher_id == ""
    assert wire.decode_body(v2(inner(publisher_id=None))).publisher_id == ""
    assert "publisher_id" in reason(v2(inner(publisher_id=["x"])))


@pytest.mark.parametrize("event_type", ["baremetal..node", ".image", "image.", "image upload", "a\tb"])
def test_event_type_must_be_dotted(event_type):
    assert "event_type" in reason(v2(inner(event_type=event_type)))


def test_payload_may_be_any_json_value():
    for payload in ("text", None, 3, [1, 2], {"a": {"b": [None]}}):
        assert wire.decode_body(v2(inner(payload=payload))).payload == payload


@pytest.mark.parametrize("body, words", [
    (orjson.dumps({"oslo.version": "1.0", "oslo.message": orjson.dumps(inner()).decode()}), "oslo.version"),
    (orjson.dumps({"oslo.version": "3.0", "oslo.message": orjson.dumps(inner()).decode()}), "oslo.version"),
    (orjson.dumps({"oslo.version": 2.0, "oslo.message": orjson.dumps(inner()).decode()}), "oslo.version"),
    (orjson.dumps({"oslo.version": "2.0", "oslo.message": inner()}), "oslo.message is not a JSON string"),
    (orjson.dumps({"oslo.version": "2.0", "oslo.message": "{nope"}), "oslo.message is not JSON"),
    (orjson.dumps({"oslo.version": "2.0", "oslo.message": "[1]"}), "oslo.message is not a JSON object"),
    (orjson.dumps({"oslo.message": orjson.dumps(inner()).decode()}), "oslo.version"),
    (b"[1, 2]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (b"42", "not a JSON object"),
    (b"null", "not a JSON object"),
    (b"", "empty"),
    (b"  \n", "empty"),
    (b'{"message_id": "x"', "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b'{"a": "\xc3\x28"}', "UTF-8"),
    (b"[" * 2000 + b"]" * 2000, "not JSON"),  # orjson's depth limit
    (b"{\"a\": NaN}", "not JSON"),
])
def test_rejections(body, words):
    assert words in reason(body)


def test_non_bytes_is_rejected():
    assert "not bytes" in reason(12)  # type: ignore[arg-type]


def test_secret_context_fields_are_dropped():
    msg = inner(_context_auth_token="gAAAA-token", _context_auth_token_info={"token": {"x": 1}},
                _context_user="u1", _unique_id="abc")
    n = wire.decode_body(orjson.dumps(msg))  # a v1 body from a publisher that did not redact
    assert n.context == {"user": "u1"}
    assert "gAAAA-token" not in repr(n)


def test_size_limit():
    body = v2(inner(payload="x" * 5_000_000))
    assert len(wire.decode_body(body).payload) == 5_000_000
    with pytest.raises(Rejected, match="exceeds the limit of 1000000 bytes"):
        wire.decode_body(body, max_bytes=1_000_000)


def test_read_line_capture_and_plain():
    body = RESEARCH[2].decode()
    capture = orjson.dumps({"exchange": "glance", "routing_key": "notifications.info", "body": body})
    assert wire.read_line(capture + b"\n") == (body.encode(), "glance", "notifications.info")
    assert wire.read_line(RESEARCH[2] + b"\r\n") == (RESEARCH[2], None, None)
    parsed_body = orjson.dumps({"exchange": "glance", "routing_key": "k", "body": orjson.loads(body)})
    n, raw, exchange, key = wire.decode_line(parsed_body)
    assert n == wire.decode_body(body) and orjson.loads(raw) == orjson.loads(body) and exchange == "glance"


@pytest.mark.parametrize("line, words", [
    (b"", "empty line"),
    (b"   \r\n", "empty line"),
    (b'{"exchange": "glance", "body": 42}', "capture body is not a string"),
    (b'{"exchange": "glance", "body": ""}', "capture body is empty"),
    (b'{"exchange": 5, "body": "{}"}', "capture exchange"),
    (b'{"exchange": "glance", "body": "{oops"}', "capture body is not JSON"),
    (b'{"exchange": "glance", "routing_key"', "line is not JSON"),
])
def test_bad_lines(line, words):
    with pytest.raises(Rejected, match=words):
        wire.decode_line(line)


def test_rfc3339():
    assert wire.rfc3339(datetime(2026, 11, 22, 1, 9, 39, 839084, tzinfo=UTC)) == "2026-11-22T01:09:39.839084Z"
    assert wire.rfc3339(datetime(2026, 11, 22, 1, 9, 39, tzinfo=UTC)) == "2026-11-22T01:09:39.000000Z"
    plus2 = timezone(timedelta(hours=2))
    assert wire.rfc3339(datetime(2026, 11, 22, 3, 9, 39, tzinfo=plus2)) == "2026-11-22T01:09:39.000000Z"


def test_reasons_stay_short():
    assert len(reason(orjson.dumps({"oslo.version": "x" * 100_000, "oslo.message": "{}"}))) <= 300
