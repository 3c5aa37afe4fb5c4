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


def env_float(name: str, default: float) -> float:
    raw = env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


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
        "--kafka-security-protocol",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        default=env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        help="(env KAFKA_SECURITY_PROTOCOL; default %(default)s)",
    )
    group.add_argument(
        "--kafka-sasl-mechanism",
        choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        default=env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        help="with a SASL_* protocol; the user is KAFKA_SASL_USERNAME, the password KAFKA_SASL_PASSWORD "
        "or the file KAFKA_SASL_PASSWORD_FILE (env KAFKA_SASL_MECHANISM; default %(default)s)",
    )
    group.add_argument(
        "--kafka-ssl-cafile",
        default=env("KAFKA_SSL_CAFILE"),
        help="CA bundle that signs the brokers' certificates; default: the system's (env KAFKA_SSL_CAFILE)",
    )
    group.add_argument(
        "--kafka-ssl-certfile",
        default=env("KAFKA_SSL_CERTFILE"),
        help="client certificate for mutual TLS (env KAFKA_SSL_CERTFILE)",
    )
    group.add_argument(
        "--kafka-ssl-keyfile",
        default=env("KAFKA_SSL_KEYFILE"),
        help="its private key (env KAFKA_SSL_KEYFILE)",
    )
    group.add_argument(
        "--kafka-ssl-no-check-hostname",
        action="store_true",
        default=env("KAFKA_SSL_CHECK_HOSTNAME", "true").lower() in ("0", "false", "no"),
        help="do not verify that the broker's certificate names the host dialled "
        "(env KAFKA_SSL_CHECK_HOSTNAME=false); verification is on by default",
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
        help="amqp:// or amqps:// URL with the virtual host as its path; keep the password out of it "
        "and in AMQP_PASSWORD or the file AMQP_PASSWORD_FILE (env AMQP_URL; default amqp://guest:***@127.0.0.1:5672/)",
    )
    group.add_argument(
        "--amqp-ssl-cafile",
        default=env("AMQP_SSL_CAFILE"),
        help="CA bundle for amqps:// (env AMQP_SSL_CAFILE; default: the system's)",
    )
    group.add_argument(
        "--amqp-ssl-certfile", default=env("AMQP_SSL_CERTFILE"),
        help="client certificate for amqps:// (env AMQP_SSL_CERTFILE)",
    )
    group.add_argument(
        "--amqp-ssl-keyfile", default=env("AMQP_SSL_KEYFILE"),
        help="its private key (env AMQP_SSL_KEYFILE)",
    )


def add_value_format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--value-format",
        choices=("avro", "json"),
        default=env("VALUE_FORMAT", "avro"),
        help="record values: Avro single-object encoding, or JSON for simple consumers "
        "(env VALUE_FORMAT; default %(default)s)",
    )


def _ssl_context(cafile: str | None, certfile: str | None, keyfile: str | None, check_hostname: bool):
    import ssl

    try:
        context = ssl.create_default_context(cafile=cafile)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        what = getattr(exc, "filename", None) or cafile or certfile
        raise ConfigError(f"cannot load TLS material {what}: {getattr(exc, 'strerror', None) or exc}") from None
    context.check_hostname = check_hostname
    return context


def kafka_client_kwargs(args: argparse.Namespace) -> dict:
    """The connection settings every aiokafka client of ours shares (producer, consumer, admin)."""
    kwargs: dict = {"bootstrap_servers": args.kafka_bootstrap_servers.split(",")}
    protocol = getattr(args, "kafka_security_protocol", "PLAINTEXT")
    kwargs["security_protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = _ssl_context(
            args.kafka_ssl_cafile, args.kafka_ssl_certfile, args.kafka_ssl_keyfile,
            not args.kafka_ssl_no_check_hostname,
        )
    if protocol.startswith("SASL_"):
        user, password = env("KAFKA_SASL_USERNAME"), secret("KAFKA_SASL_PASSWORD")
        if not user or password is None:
            raise ConfigError(
                f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
            )
        kwargs.update(sasl_mechanism=args.kafka_sasl_mechanism, sasl_plain_username=user,
                      sasl_plain_password=password)
    return kwargs


def amqp_connect_kwargs(args: argparse.Namespace) -> dict:
    """aio-pika `connect_robust` arguments: the URL with the password from the environment or a
    file when it is not in the URL, and the TLS context for amqps://."""
    from urllib.parse import quote, urlsplit, urlunsplit

    url = args.amqp_url
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"AMQP URL must start with amqp:// or amqps://, not {mask_url(url)}")
    password = secret("AMQP_PASSWORD")
    if password is not None and parts.username:
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=f"{parts.username}:{quote(password, safe='')}@{host}"))
    kwargs: dict = {"url": url}
    if parts.scheme == "amqps":
        kwargs["ssl_context"] = _ssl_context(args.amqp_ssl_cafile, args.amqp_ssl_certfile, args.amqp_ssl_keyfile, True)
    return kwargs


def mask_url(url: str) -> str:
    """The URL with its password replaced, for logs and errors."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
