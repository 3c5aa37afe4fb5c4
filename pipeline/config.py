"""Settings: every one is a command-line flag whose default comes from an environment variable.

Secrets are never flags (they would show in `ps`): they come from an environment variable or from a
file, the way Kubernetes mounts a Secret.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


class ConfigError(Exception):
    """A setting that cannot be used; the message is one line and names the setting."""


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_int(name: str, default: int) -> int:
    raw = env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def secret(name: str) -> str | None:
    """`NAME` from the environment, or the content of the file named by `NAME_FILE`."""
    path = env(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return env(name)


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka")
    group.add_argument(
        "--kafka-bootstrap-servers",
        default=env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="comma-separated host:port list (env KAFKA_BOOTSTRAP_SERVERS; default %(default)s)",
    )
    group.add_argument(
        "--topic-prefix",
        default=env("TOPIC_PREFIX", "notifications."),
        help="prefix of the relay topics, one per family (env TOPIC_PREFIX; default %(default)s)",
    )
    group.add_argument(
        "--topic-partitions",
        type=int,
        default=env_int("TOPIC_PARTITIONS", 6),
        help="partitions of topics created when missing (env TOPIC_PARTITIONS; default %(default)s)",
    )


def add_amqp_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("RabbitMQ")
    group.add_argument(
        "--amqp-url",
        default=env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="AMQP URL; the password may instead come from AMQP_PASSWORD or AMQP_PASSWORD_FILE "
        "(env AMQP_URL; default amqp://guest:***@127.0.0.1:5672/)",
    )


def add_value_format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--value-format",
        choices=("avro", "json"),
        default=env("VALUE_FORMAT", "avro"),
        help="record values: Avro single-object encoding, or JSON for simple consumers "
        "(env VALUE_FORMAT; default %(default)s)",
    )


def kafka_client_kwargs(args: argparse.Namespace) -> dict:
    """The connection settings every aiokafka client of ours shares."""
    return {"bootstrap_servers": args.kafka_bootstrap_servers.split(",")}


def mask_url(url: str) -> str:
    """The URL with its password replaced, for logs and errors."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
