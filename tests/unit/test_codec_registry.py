"""codec's registry framing (byte 0 + 4-byte big-endian id + body) and its id cache, without a
registry: the cache is given plain functions where the shell gives it the registry's HTTP calls."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import avro.io
import avro.schema
import orjson
import pytest

from pipeline import codec, config, events, registry
from pipeline.config import ConfigError
from tests.support.avro_samples import samples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BODY = (FIXTURES / "research_bodies.jsonl").read_bytes().splitlines()[0]
TOPIC = "notifications.baremetal.node"


@pytest.fixture
def ids(monkeypatch) -> codec.SchemaIds:
    """A fresh process-wide cache (the decoders read `codec.IDS`) whose 'registry' is a dict."""
    registered: dict[str, int] = {}
    texts: dict[int, str] = {}

    def register(subject: str, s: codec.Schema) -> int:
        schema_id = registered.setdefault(subject, 100 + len(registered))
        texts[schema_id] = s.text
        return schema_id

    fresh = codec.SchemaIds(register, lambda schema_id: texts[schema_id])
    fresh.registered = registered
    fresh.texts = texts
    monkeypatch.setattr(codec, "IDS", fresh)
    return fresh


def test_registry_framing_is_zero_id_body_and_apache_reads_the_body(ids):
    event = events.normalize(BODY)
    value, content_type = codec.Encoder("avro", "registry").event(event, TOPIC)
    schema_id = ids.registered[f"{TOPIC}-value"]
    assert value[0] == 0 and int.from_bytes(value[1:5], "big") == schema_id
    assert content_type == f"avro/binary; schema=notification; framing=registry; id={schema_id}".encode()
    # the body is the same Avro binary as in single-object encoding
    assert value[5:] == codec.encode_event(event)[codec.HEADER_LEN:]
    reader = avro.io.DatumReader(avro.schema.parse(ids.texts[schema_id]))
    record = reader.read(avro.io.BinaryDecoder(io.BytesIO(value[5:])))
    assert record["message_id"] == event["message_id"] and orjson.loads(record["payload"]) == event["payload"]


def test_one_registration_per_subject(ids):
    encoder = codec.Encoder("avro", "registry")
    event = events.normalize(BODY)
    for _ in range(3):
        encoder.event(event, TOPIC)
        encoder.event(event, "notifications.image")
    assert sorted(ids.registered) == ["notifications.baremetal.node-value", "notifications.image-value"]


def test_decoders_read_both_framings_and_json(ids):
    event = events.normalize(BODY)
    registry_framed, _ = codec.Encoder("avro", "registry").event(event, TOPIC)
    for value in (registry_framed, codec.encode_event(event), codec.encode_event(event, "json")):
        assert codec.decode_event(value) == codec.decode_event(codec.encode_event(event))
    [record, _] = samples(orjson.loads(codec.schema("alert").text))
    value, _ = codec.Encoder("avro", "registry").value("alert", record, "pipeline.alerts")
    assert codec.decode(value)[0] == "alert"
    assert codec.decode_value(value) == codec.decode_value(codec.encode("alert", record))


def test_an_unknown_id_is_fetched_once_then_cached(ids):
    event = events.normalize(BODY)
    value, _ = codec.Encoder("avro", "registry").event(event, TOPIC)
    fetched: list[int] = []
    texts = dict(ids.texts)
    reader = codec.SchemaIds(fetch=lambda schema_id: fetched.append(schema_id) or texts[schema_id])
    codec.IDS = reader  # a consumer process that registered nothing (the fixture restores it)
    for _ in range(3):
        assert codec.decode_event(value)["message_id"] == event["message_id"]
    assert fetched == [int.from_bytes(value[1:5], "big")]


def test_unknown_id_without_a_registry_is_a_codec_error(monkeypatch):
    monkeypatch.setattr(codec, "IDS", codec.SchemaIds())
    with pytest.raises(codec.CodecError, match="schema id 7 is unknown"):
        codec.decode_event(b"\x00\x00\x00\x00\x07\x02")
    with pytest.raises(codec.CodecError, match="shorter than its 5-byte header"):
        codec.decode_value(b"\x00\x01")


def test_single_object_and_json_values_and_headers_are_unchanged():
    event = events.normalize(BODY)
    value, content_type = codec.Encoder().event(event, TOPIC)
    assert value == codec.encode_event(event)
    fp = codec.schema("notification").fingerprint.hex()
    assert content_type == f"avro/binary; schema=notification; fingerprint={fp}".encode()
    assert codec.Encoder("json", "registry").event(event, TOPIC) == (codec.encode_event(event, "json"), b"application/json")


def test_a_registry_that_is_down_is_waited_for_then_one_line(caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = registry.Registry(f"http://127.0.0.1:{port}/apis/ccompat/v7")
    with pytest.raises(ConfigError, match=r"unreachable for \d+ s") as raised:
        client.wait(deadline_s=1.2)
    assert "\n" not in str(raised.value)
    assert sum("not reachable" in r.getMessage() for r in caplog.records) >= 2


def test_registry_url_must_be_http():
    with pytest.raises(ConfigError, match="must start with http"):
        registry.Registry("ftp://registry:8081/")


def _args(**given) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_settings(parser, (registry.SETTINGS,))
    args = parser.parse_args([])
    for name, value in given.items():
        setattr(args, name, value)
    return args


def test_credentials_come_from_a_file(tmp_path, monkeypatch):
    import base64

    (tmp_path / "password").write_text("s3cret\n")
    monkeypatch.setenv("SCHEMA_REGISTRY_USERNAME", "pipeline")
    monkeypatch.setenv("SCHEMA_REGISTRY_PASSWORD_FILE", str(tmp_path / "password"))
    client = registry.from_args(_args(avro_framing="registry"))
    assert client._headers["Authorization"] == "Basic " + base64.b64encode(b"pipeline:s3cret").decode()
    assert registry.from_args(_args()) is None  # single-object: no registry is asked
    assert registry.from_args(_args(avro_framing="registry", value_format="json")) is None


def test_a_bad_framing_from_the_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("AVRO_FRAMING", "confluent")
    with pytest.raises(ConfigError, match="AVRO_FRAMING 'confluent': one of single-object, registry"):
        registry.from_args(_args())
