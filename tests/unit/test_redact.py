"""redact: credential-like keys at any depth, URL credentials, name/value pairs; input untouched."""
from __future__ import annotations

import copy

import orjson
import pytest

import tests.support.seed_examples as seed_examples
from pipeline import redact
from pipeline.bench.core import sample_bodies

SECRET = "s3cr3t-VALUE"


@pytest.mark.parametrize("key", [
    "password", "Password", "PASSWORD", "passwd", "ipmi_password", "auth_password", "db_pass", "admin_pass",
    "adminPass", "new_pass", "passphrase", "sys_pswd", "secret", "client_secret", "chapsecret", "token",
    "auth_token", "X-Auth-Token", "agent_secret_token", "private_key", "ssh_private_key", "privateKey",
    "credential", "credentials", "keystonecredential", "api_key", "apiKey", "API-KEY", "snmp_auth_key",
    "snmp_priv_key", "access_key", "encryption_key", "fernetkey", "sslkey", "cephxkey", "snmp_community",
    "cookie", "Authorization", "configdrive", "redfish_password", "ilo_password", "drac_password",
])
def test_credential_keys(key):
    assert redact.is_credential_key(key)
    assert redact.mask({key: SECRET}) == {key: "***"}


@pytest.mark.parametrize("key", [
    "uuid", "node_uuid", "name", "power_state", "provision_state", "driver_info", "instance_info",
    "ipmi_username", "ipmi_address", "bypass", "passthrough", "keyboard_layout", "monkey", "secure_boot",
    "ironic_object.data", "checksum", "os_hash_value", "description", "owner", "image_id", "bytes_sent",
])
def test_harmless_keys(key):
    assert not redact.is_credential_key(key)
    assert redact.mask({key: "v"}) == {key: "v"}


def test_nested_at_any_depth_and_in_lists():
    payload = {"a": {"b": [{"c": {"password": SECRET, "ok": 1}}, {"token": SECRET}]},
               "driver_info": {"ipmi_password": SECRET, "ipmi_username": "admin"},
               "credentials": {"user": "u", "pass": SECRET}, "list": [[[{"Secret": SECRET}]]]}
    masked = redact.mask(payload)
    assert SECRET not in orjson.dumps(masked).decode()
    assert masked["driver_info"] == {"ipmi_password": "***", "ipmi_username": "admin"}
    assert masked["credentials"] == "***"  # the whole value under a credential key
    assert masked["a"]["b"][0]["c"]["ok"] == 1


def test_ironic_masking_and_empty_values_are_kept():
    payload = {"driver_info": {"ipmi_password": "******"}, "instance_info": {"configdrive": "******"},
               "auth_token": None, "password": ""}
    assert redact.mask(payload) == payload


@pytest.mark.parametrize("text, expected", [
    ("https://user:pa55@images.example.org/x.qcow2", "https://user:***@images.example.org/x.qcow2"),
    ("swift+https://tenant%3Auser:k3y@swift:8080/v1/c", "swift+https://tenant%3Auser:***@swift:8080/v1/c"),
    ("rabbit://guest:guest@rabbit:5672/ and amqp://a:b@h", "rabbit://guest:***@rabbit:5672/ and amqp://a:***@h"),
    ("see http://host/path?x=1", "see http://host/path?x=1"),
    ("http://user@host/only-a-user", "http://user@host/only-a-user"),
    ("http://user:******@host/", "http://user:******@host/"),
    ("no url at all: a@b", "no url at all: a@b"),
])
def test_url_credentials(text, expected):
    assert redact.mask_text(text) == expected
    assert redact.mask({"image_source": text, "deep": [text]}) == {"image_source": expected, "deep": [expected]}


def test_name_value_pairs_of_bios_settings():
    steps = [{"interface": "bios", "step": "apply_configuration", "args": {"settings": [
        {"name": "AdminPassword", "value": SECRET}, {"name": "LogicalProc", "value": "Enabled"}]}}]
    masked = redact.mask({"steps": steps})
    settings = masked["steps"][0]["args"]["settings"]
    assert settings == [{"name": "AdminPassword", "value": "***"}, {"name": "LogicalProc", "value": "Enabled"}]


def test_input_is_not_mutated():
    payload = {"a": {"password": SECRET, "l": [{"token": SECRET}]}, "u": "http://x:y@h"}
    before = copy.deepcopy(payload)
    masked = redact.mask(payload)
    assert payload == before
    assert masked is not payload and masked["a"] is not payload["a"]


def test_real_payloads_pass_unchanged():
    for example in seed_examples.ironic_examples():
        if example["event_type"] != "baremetal.volumetarget.update.end":  # holds a documented auth_password
            assert redact.mask(example["payload"]) == example["payload"]
    for body in sample_bodies():
        payload = orjson.loads(orjson.loads(body)["oslo.message"])["payload"]
        assert redact.mask(payload) == payload


def test_too_deep():
    deep: object = "x"
    for _ in range(redact.MAX_DEPTH + 1):
        deep = {"k": deep}
    with pytest.raises(redact.TooDeep):
        redact.mask(deep)
    shallow: object = SECRET
    for _ in range(redact.MAX_DEPTH - 2):
        shallow = [shallow]
    assert redact.mask({"password": shallow}) == {"password": "***"}


def test_scalars_and_non_string_keys():
    assert redact.mask(None) is None
    assert redact.mask(3) == 3
    assert redact.mask("plain") == "plain"
    assert redact.mask({1: "x", "token": 5}) == {1: "x", "token": "***"}


def test_dead_letter_bodies_keep_their_shape_but_not_their_credentials() -> None:
    from pipeline.redact import mask_body

    broken_inner = (b'{"oslo.version": "2.0", "oslo.message": "{\\"_context_auth_token\\": \\"tok-1\\", '
                    b'\\"payload\\": {\\"driver_info\\": {\\"ipmi_password\\": \\"pw-2\\"}}, \\"x\\": 1"}')
    for body, secrets in (
        (broken_inner, (b"tok-1", b"pw-2")),
        (b'{"password": "pw-3", "trunc', (b"pw-3",)),
        (b'{"event_type": 5, "payload": {"admin_pass": "pw-4"}}', (b"pw-4",)),
        (b"not json amqp://u:pw-5@h/", (b"pw-5",)),
    ):
        masked = mask_body(body)
        assert not any(s in masked for s in secrets), masked
        assert b"***" in masked
    assert mask_body(b"\xff\xfe garbage") == b"\xff\xfe garbage"  # nothing to mask: byte for byte
