"""events: the normalized event, UUID canonicalization, topics; and acceptance 4 (property-based):
arbitrary bytes and arbitrary JSON give a normalized event or the project's own Rejected, nothing else."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import codec, events, wire
from pipeline.wire import Rejected

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RESEARCH = (FIXTURES / "research_bodies.jsonl").read_bytes().splitlines()
U = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


def body(event_type: str, payload, priority: str = "INFO", **extra) -> bytes:
    msg = {"message_id": str(uuid.uuid4()), "publisher_id": "p", "event_type": event_type,
           "priority": priority, "payload": payload, "timestamp": "2026-11-22 01:09:39.839084", **extra}
    return orjson.dumps({"oslo.version": "2.0", "oslo.message": orjson.dumps(msg).decode()})


def test_fields_exactly_and_in_order():
    event = events.normalize(RESEARCH[0])
    assert tuple(event) == events.EVENT_FIELDS
    assert event["timestamp"] == "2026-11-22T01:11:48.287830Z"
    assert event["payload_name"] == "NodeSetPowerStatePayload" and event["payload_version"] == "1.17"


@pytest.mark.parametrize("raw", [U, U.upper(), "{" + U + "}", U.replace("-", ""), "urn:uuid:" + U, f" {U} "])
def test_canonical_uuid_accepts_unambiguous_spellings(raw):
    assert events.canonical_uuid(raw) == U


@pytest.mark.parametrize("raw", ["", "node-1", "1234", 12345, None, ["x"], U[:-1], U + "0", "x" * 100])
def test_canonical_uuid_rejects_the_rest(raw):
    assert events.canonical_uuid(raw) is None


def test_uuid_normalized_in_events():
    event = events.normalize(body("baremetal.port.update.end", {"ironic_object.data": {
        "uuid": U.upper(), "node_uuid": "{" + U.replace("-", "") + "}"}}))
    assert event["resource_uuid"] == U and event["node_uuid"] == U


def test_non_uuid_id_gives_null():
    event = events.normalize(body("image.create", {"id": "not-a-uuid"}))
    assert event["resource_uuid"] is None and events.relay_key(event) is None


def test_text_payload_uuid():
    event = events.normalize(body("image.upload", f"Failed to upload image {U.upper()}: quota", "ERROR"))
    assert (event["resource_uuid"], event["phase"]) == (U, "error")
    checksum_only = events.normalize(body("image.upload", "md5 c8fc807773e5354afe61636071771906 bad", "ERROR"))
    assert checksum_only["resource_uuid"] is None
    node_text = events.normalize(body("baremetal.node.power_set.error", f"node {U} failed", "ERROR"))
    assert node_text["resource_uuid"] == node_text["node_uuid"] == U


def test_metadef_has_no_resource_uuid():
    event = events.normalize(body("metadef_namespace.create", {"namespace": "OS::Glance", "id": U}))
    assert event["resource_uuid"] is None and event["service"] == "image"
    assert event["topic"] == "notifications.metadef_namespace"


def test_payload_is_masked_but_notification_is_not():
    raw = body("baremetal.node.update.end", {"ironic_object.data": {"uuid": U, "driver_info": {"ipmi_password": "pw"}}})
    n = wire.decode_body(raw)
    event = events.normalize_notification(n)
    assert event["payload"]["ironic_object.data"]["driver_info"]["ipmi_password"] == "***"
    assert n.payload["ironic_object.data"]["driver_info"]["ipmi_password"] == "pw"


def test_topics():
    assert events.normalize(RESEARCH[0], topic_prefix="os.")["topic"] == "os.baremetal.node"
    assert events.topic_for("weird family/with:chars") == "notifications.weird_family_with_chars"
    assert len(events.topic_for("x" * 400)) == 249
    assert events.DEADLETTER_TOPIC == "notifications.deadletter"


def test_relay_key():
    assert events.relay_key(events.normalize(RESEARCH[0])) == U.encode()


def test_too_deep_payload_is_rejected():
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(Rejected, match="payload nested deeper than 128 levels"):
        events.normalize(body("image.create", deep))


def test_normalize_line_capture():
    line = orjson.dumps({"exchange": "glance", "routing_key": "notifications.info", "body": RESEARCH[2].decode()})
    assert events.normalize_line(line) == events.normalize(RESEARCH[2])


# --- acceptance 4: property-based --------------------------------------------------------------

def _check_outcome(fn, data) -> None:
    try:
        event = fn(data)
    except Rejected as exc:
        assert exc.reason and "\n" not in exc.reason
        return
    assert tuple(event) == events.EVENT_FIELDS
    assert isinstance(event["message_id"], str) and event["priority"] in wire.PRIORITIES
    assert event["timestamp"].endswith("Z")
    assert event["resource_uuid"] is None or events.canonical_uuid(event["resource_uuid"]) == event["resource_uuid"]
    # whatever normalize accepts, the relay can encode, and it reads back the same
    assert codec.decode_event(codec.encode_event(event)) == event
    assert codec.decode_event(codec.encode_event(event, "json")) == event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data):
    _check_outcome(events.normalize, data)
    _check_outcome(events.normalize_line, data)


@FUZZ
@given(json_values)
def test_arbitrary_json(value):
    text = json.dumps(value)
    _check_outcome(events.normalize, text.encode())
    _check_outcome(events.normalize_line, text)


# field -> (plausible values, anything); messages mostly draw plausible ones to get deep into the code
field_values = {
    "message_id": (st.uuids().map(str), json_values),
    "event_type": (
        st.sampled_from(["baremetal.node.power_set.start", "image.upload", "task.run", "image.member.create",
                         "baremetal.port.create.end", "metadef_tag.create", "x", "a.b.c.success"]),
        st.one_of(st.text(max_size=30), json_values)),
    "priority": (st.sampled_from(["INFO", "ERROR", "WARN", "warning", "sample"]),
                 st.one_of(st.just("bogus"), json_values)),
    "publisher_id": (st.text(max_size=10), json_values),
    "timestamp": (
        st.one_of(st.datetimes().map(str), st.datetimes().map(lambda d: d.isoformat() + "Z"),
                  st.datetimes(timezones=st.builds(timezone, st.timedeltas(min_value=-timedelta(hours=23),
                                                                           max_value=timedelta(hours=23)))
                               ).map(lambda d: d.isoformat())),
        st.one_of(st.text(max_size=30), json_values)),
    "payload": (
        st.one_of(
            st.builds(lambda u, d: {"ironic_object.data": {"uuid": u, "node_uuid": u, **d}},
                      st.one_of(st.uuids().map(str), st.uuids().map(lambda x: str(x).upper()), st.text(max_size=8)),
                      st.dictionaries(st.sampled_from(["password", "token", "x", "url"]), json_values, max_size=3)),
            st.builds(lambda u, t: f"{t} {u} {t}", st.uuids().map(str), st.text(max_size=20)),
            st.builds(lambda u, d: {"id": u, "image_id": u, **d}, st.uuids().map(str),
                      st.dictionaries(st.text(max_size=8), json_values, max_size=4))),
        json_values),
    "_unique_id": (st.uuids().map(lambda u: u.hex), json_values),
    "_context_auth_token": (st.none(), json_values),
    "_context": (st.dictionaries(st.text(max_size=8), json_values, max_size=3), json_values),
}
REQUIRED = ("message_id", "event_type", "priority", "timestamp", "payload")


@st.composite
def messages(draw):
    keys = set(draw(st.lists(st.sampled_from(sorted(field_values)), unique=True)))
    if draw(st.integers(0, 9)) < 8:  # mostly complete messages
        keys |= set(REQUIRED)
    return {k: draw(field_values[k][0] if draw(st.integers(0, 9)) < 8 else field_values[k][1]) for k in sorted(keys)}


@FUZZ
@given(messages(), st.sampled_from(["v2", "v1", "capture", "bad-version"]))
def test_structured_messages(msg, shape):
    inner = json.dumps(msg)
    if shape == "v2":
        data = json.dumps({"oslo.version": "2.0", "oslo.message": inner})
    elif shape == "bad-version":
        data = json.dumps({"oslo.version": "1.0", "oslo.message": inner})
    elif shape == "capture":
        data = json.dumps({"exchange": "ironic", "routing_key": "x.info",
                           "body": json.dumps({"oslo.version": "2.0", "oslo.message": inner})})
    else:
        data = inner
    _check_outcome(events.normalize_line, data.encode())
    if shape != "capture":
        _check_outcome(events.normalize, data)


def test_core_throughput_measure_reports_a_rate():
    """Acceptance 6 is a figure, not a timed assertion: `python -m pipeline.bench.core` prints it."""
    from pipeline.bench.core import measure_core, sample_bodies

    assert all(2000 <= len(b) <= 3000 for b in sample_bodies())  # realistic 2-3 KB Ironic bodies
    result = measure_core(0.2)
    assert result["events"] > 0 and result["core_rate"] > 0
    assert set(result) >= {"core_rate", "events", "seconds", "body_bytes_avg", "avro_bytes_avg"}
