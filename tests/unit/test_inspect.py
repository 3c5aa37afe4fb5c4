"""Acceptance 3 and 5: `pipeline inspect` as a real process, and no credential survives."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from pipeline import codec, events, inspect
from tests.support.oslo_wire import publish

REPO = Path(__file__).resolve().parents[2]
RESEARCH = (REPO / "tests" / "fixtures" / "research_bodies.jsonl").read_bytes().splitlines()


def run_inspect(data: bytes, *args: str) -> tuple[int, list[bytes], bytes]:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "inspect", *args], input=data, capture_output=True,
                          cwd=REPO, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = proc.stdout.split(b"\n")
    assert lines[-1] == b"", "output must end with a newline"
    return proc.returncode, lines[:-1], proc.stderr


def capture_line(exchange: str, routing_key: str, body: bytes) -> bytes:
    return orjson.dumps({"exchange": exchange, "routing_key": routing_key, "body": body.decode()})


def test_mixed_input_one_line_per_input_in_order():
    node = str(uuid.uuid4())
    v2 = publish("baremetal.node.power_set.end", {"ironic_object.data": {"uuid": node}}).body
    v1 = publish("baremetal.node.power_set.start", {"ironic_object.data": {"uuid": node}}, driver="messaging").body
    cap = publish("image.send", {"image_id": node, "bytes_sent": 1}, publisher_id="image.api1")
    no_uuid = publish("image.upload", "Image storage media is full", priority="error").body
    big_payload = {"ironic_object.data": {"uuid": node, "extra": {"blob": "x" * 5_000_000}}}
    big = publish("baremetal.node.update.end", big_payload).body
    assert len(big) > 5_000_000
    garbage = bytes(range(256)).replace(b"\n", b"") * 3
    inputs = [
        v2,                                                            # 1 ok
        v1,                                                            # 2 ok
        capture_line(cap.exchange, cap.routing_key, cap.body),         # 3 ok
        v2[: len(v2) // 2],                                            # 4 truncated JSON
        garbage,                                                       # 5 binary garbage
        big,                                                           # 6 ok: 5 MB body
        no_uuid,                                                       # 7 ok: no UUID anywhere
        b"",                                                           # 8 empty line
        b'{"oslo.version": "2.0", "oslo.message": "{\\"priority\\": \\"INFO\\"}"}',  # 9 missing fields
        RESEARCH[1],                                                   # 10 ok
        b"[1, 2, 3]",                                                  # 11 not an object
    ]
    code, out, stderr = run_inspect(b"\n".join(inputs) + b"\n")
    assert code == 1, stderr
    assert len(out) == len(inputs)
    results = [orjson.loads(line) for line in out]
    errors = {i + 1: r for i, r in enumerate(results) if "error" in r}
    assert sorted(errors) == [4, 5, 8, 9, 11]
    for number, result in errors.items():
        assert result["line"] == number and set(result) == {"error", "line"}
    assert "not JSON" in errors[4]["error"] and "not JSON" in errors[5]["error"]
    assert errors[8]["error"] == "empty line"
    assert errors[9]["error"] == "missing message_id"
    assert "not a JSON object" in errors[11]["error"]
    ok = {i + 1: r for i, r in enumerate(results) if "error" not in r}
    assert [ok[n]["event_type"] for n in (1, 2, 3, 6, 7, 10)] == [
        "baremetal.node.power_set.end", "baremetal.node.power_set.start", "image.send",
        "baremetal.node.update.end", "image.upload", "image.upload"]
    assert ok[1]["message_id"] == orjson.loads(orjson.loads(v2)["oslo.message"])["message_id"]
    assert ok[2]["message_id"] == orjson.loads(v1)["message_id"]
    assert ok[1]["resource_uuid"] == ok[2]["resource_uuid"] == ok[3]["resource_uuid"] == ok[6]["resource_uuid"] == node
    assert len(ok[6]["payload"]["ironic_object.data"]["extra"]["blob"]) == 5_000_000
    assert ok[7]["resource_uuid"] is None and ok[7]["phase"] == "error" and ok[7]["payload"] == "Image storage media is full"
    for event in ok.values():
        assert tuple(event) == events.EVENT_FIELDS


def test_only_valid_lines_exit_zero():
    code, out, stderr = run_inspect(b"\n".join(RESEARCH) + b"\n")
    assert code == 0, stderr
    assert [orjson.loads(line)["message_id"] for line in out] == [
        orjson.loads(orjson.loads(b)["oslo.message"])["message_id"] if b.startswith(b'{"oslo')
        else orjson.loads(b)["message_id"] for b in RESEARCH]


def test_last_line_without_newline_and_crlf():
    code, out, _ = run_inspect(RESEARCH[0] + b"\r\n" + RESEARCH[2])
    assert code == 0 and len(out) == 2


def test_body_limit_flag():
    big = publish("image.update", {"id": str(uuid.uuid4()), "blob": "y" * 200_000}, publisher_id="image.x").body
    code, out, _ = run_inspect(RESEARCH[0] + b"\n" + big + b"\n", "--max-body-bytes", "100000")
    assert code == 1
    assert "error" not in orjson.loads(out[0])
    assert orjson.loads(out[1])["error"].startswith("body of ")


def test_empty_input():
    code, out, _ = run_inspect(b"")
    assert (code, out) == (0, [])


SECRET = f"TopSecret-{uuid.uuid4().hex}"


def secret_payload(node: str) -> dict:
    return {
        "ironic_object.name": "NodeCRUDPayload", "ironic_object.version": "1.15",
        "ironic_object.data": {
            "uuid": node,
            "driver_info": {"ipmi_address": "10.0.0.5", "ipmi_username": "admin", "ipmi_password": SECRET,
                            "redfish_password": SECRET, "snmp_auth_key": SECRET},
            "instance_info": {"image_source": f"https://glance:{SECRET}@images.example.org/img.qcow2",
                              "configdrive": SECRET},
            "extra": {"deep": [{"deeper": {"X-Auth-Token": SECRET, "credentials": {"user": "u", "key": SECRET}}}],
                      "API_KEY": SECRET, "private_key": f"-----BEGIN RSA PRIVATE KEY-----{SECRET}",
                      "client_secret": SECRET},
            "deploy_step": {"args": {"settings": [{"name": "AdminPassword", "value": SECRET}]}},
        },
    }


def test_no_credential_survives_into_inspect_output_or_avro():
    from oslo_context import context as oslo_context

    node = str(uuid.uuid4())
    ctx = oslo_context.RequestContext(user_id="u1", auth_token=SECRET)
    bodies = [
        publish("baremetal.node.update.end", secret_payload(node), context=ctx).body,
        publish("baremetal.node.update.end", secret_payload(node), context=ctx, driver="messaging").body,
        # a publisher that does not redact its context, as a v1 body
        orjson.dumps({**orjson.loads(publish("baremetal.node.create.end", secret_payload(node),
                                             driver="messaging").body), "_context_auth_token": SECRET}),
    ]
    assert all(SECRET.encode() in b for b in bodies)  # oslo relays payloads as given: the secrets are on the wire
    code, out, _ = run_inspect(b"\n".join(bodies) + b"\n")
    assert code == 0
    assert SECRET.encode() not in b"\n".join(out)
    for line, raw in zip(out, bodies):
        event = orjson.loads(line)
        data = event["payload"]["ironic_object.data"]
        assert data["driver_info"]["ipmi_password"] == "***" and data["driver_info"]["ipmi_username"] == "admin"
        assert data["instance_info"]["image_source"] == "https://glance:***@images.example.org/img.qcow2"
        for fmt in ("avro", "json"):
            value = codec.encode_event(events.normalize(raw), fmt)
            assert SECRET.encode() not in value
            assert SECRET not in str(codec.decode_event(value))


def test_inspect_lines_in_process_survives_internal_errors(monkeypatch):
    def boom(line, **_):
        raise RuntimeError("bug")
    monkeypatch.setattr(events, "normalize_line", boom)
    sink = io.BytesIO()
    assert inspect.inspect_lines(io.BytesIO(b"a\nb\n"), sink) == 2
    assert [orjson.loads(x)["line"] for x in sink.getvalue().splitlines()] == [1, 2]


def test_help():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "inspect", "--help"], capture_output=True, cwd=REPO,
                          timeout=60)
    assert proc.returncode == 0 and b"--topic-prefix" in proc.stdout
