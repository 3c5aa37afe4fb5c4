"""Settings: secrets from the environment or files, TLS material, one-line errors."""

from __future__ import annotations

import argparse
import ssl

import pytest

from pipeline import config
from pipeline.config import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_settings(parser, (config.KAFKA, config.AMQP))
    return parser.parse_args(list(argv))


def test_amqp_password_from_env_or_file_replaces_the_url_password(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AMQP_PASSWORD", "s3cr/t")
    url = config.amqp_connect_kwargs(_args("--amqp-url", "amqp://bridge:x@rabbit:5672/vh"))["url"]
    assert url == "amqp://bridge:s3cr%2Ft@rabbit:5672/vh"
    monkeypatch.delenv("AMQP_PASSWORD")
    (tmp_path / "pw").write_text("fromfile\n")
    monkeypatch.setenv("AMQP_PASSWORD_FILE", str(tmp_path / "pw"))
    assert config.amqp_connect_kwargs(_args("--amqp-url", "amqp://bridge@rabbit/"))["url"] == "amqp://bridge:fromfile@rabbit/"


def test_amqps_gets_a_verifying_tls_context() -> None:
    kwargs = config.amqp_connect_kwargs(_args("--amqp-url", "amqps://u@rabbit:5671/openstack"))
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_kafka_sasl_ssl_from_env_and_file(monkeypatch, tmp_path) -> None:
    (tmp_path / "pw").write_text("kafka-secret\n")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "pipeline")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    kwargs = config.kafka_client_kwargs(_args("--kafka-security-protocol", "SASL_SSL"))
    assert kwargs["sasl_plain_password"] == "kafka-secret"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512" and kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["ssl_context"].check_hostname  # on unless turned off


def test_hostname_check_can_be_turned_off_explicitly(monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_SSL_CHECK_HOSTNAME", "false")
    assert not config.kafka_client_kwargs(_args("--kafka-security-protocol", "SSL"))["ssl_context"].check_hostname


@pytest.mark.parametrize("problem, argv, env", [
    ("needs KAFKA_SASL_USERNAME", ["--kafka-security-protocol", "SASL_SSL"], {}),
    ("cannot read", ["--kafka-security-protocol", "SASL_SSL"], {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}),
    ("cannot load TLS material", ["--kafka-security-protocol", "SSL", "--kafka-ssl-cafile", "/nonexistent/ca.pem"], {}),
])
def test_unusable_settings_are_one_line_errors(monkeypatch, problem, argv, env) -> None:
    for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=problem) as caught:
        config.kafka_client_kwargs(_args(*argv))
    assert "\n" not in str(caught.value)


def test_mask_url() -> None:
    assert config.mask_url("amqps://u:p%40ss@h:5671/v") == "amqps://u:***@h:5671/v"
    assert config.mask_url("amqp://h/") == "amqp://h/"


def _worker_settings(tmp_path, *argv: str):
    from pipeline.streams import command

    parser = argparse.ArgumentParser()
    command.configure(parser)
    return command.settings_from_args(parser.parse_args(["--data-dir", str(tmp_path), "--store", "memory://", *argv]))


def test_the_worker_fetch_size_reaches_faust_s_consumer(tmp_path) -> None:
    from pipeline.streams.app import create_app

    settings = _worker_settings(tmp_path, "--fetch-partition-mb", "8")
    assert create_app(settings, 3).app.conf.consumer_max_fetch_size == 8 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"^--fetch-partition-mb must be between 1 and 64, not 0$"):
        _worker_settings(tmp_path, "--fetch-partition-mb", "0")


async def test_the_worker_fetch_round_settings_reach_the_kafka_consumer(tmp_path) -> None:
    from pipeline.streams.app import create_app

    rt = create_app(_worker_settings(tmp_path, "--fetch-min-kb", "64", "--fetch-wait-ms", "200"), 3)
    rt.app.finalize()
    kafka = rt.app.consumer._thread._create_worker_consumer(rt.app.transport)
    assert (kafka._fetch_min_bytes, kafka._fetch_max_wait_ms) == (64 * 1024, 200)  # AIOKafkaConsumer.start's
    # source is pinned (faust_patches.PATCHED_SOURCES): it hands these two to its fetcher
    with pytest.raises(ConfigError, match=r"^--fetch-wait-ms must be between 1 and 1500, not 0$"):
        _worker_settings(tmp_path, "--fetch-wait-ms", "0")
    with pytest.raises(ConfigError, match=r"^--fetch-min-kb must be between 0 and 16384, not -1$"):
        _worker_settings(tmp_path, "--fetch-min-kb", "-1")
    with pytest.raises(ConfigError, match=r"^--fetch-round-ms must be between 0 and 1000, not 1001$"):
        _worker_settings(tmp_path, "--fetch-round-ms", "1001")
