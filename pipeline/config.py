"""Settings: every one is a command-line flag whose default comes from an environment variable.

Secrets are never flags (they would show in `ps`): they come from an environment variable or from a
file, the way Kubernetes mounts a Secret.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


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


# --- the settings tables -------------------------------------------------------------------------
# Every setting is declared once, as a row: the row builds the argparse flag (with its environment
# variable as the default), the --help text and the tables of docs/settings.md, which a test keeps
# in step with the code (`python -m pipeline.config` writes them).

Kind = Literal["value", "switch", "toggle", "list"]


@dataclass(frozen=True)
class Setting:
    """One flag and its environment variable.

    kind: ``value`` (a typed value), ``switch`` (present = on, like ``--quiet``), ``toggle``
    (``--x`` / ``--no-x``), ``list`` (repeatable; the environment variable holds a comma-separated
    list). ``from_env`` reads the variable's text when plain conversion by ``type`` is not it."""

    flag: str
    env: str | None
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    kind: Kind = "value"
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    dest: str | None = None
    from_env: Callable[[str], Any] | None = None
    shown_default: str | None = None  # what the docs say when the default is computed or secret

    @property
    def name(self) -> str:
        return self.dest or self.flag.lstrip("-").replace("-", "_")

    def env_default(self) -> Any:
        raw = env(self.env) if self.env else None
        if raw is None:
            return list(self.default) if self.kind == "list" and self.default else self.default
        if self.choices and raw not in self.choices:  # argparse checks a flag's choices, not its default
            raise ConfigError(f"{self.env} {raw!r}: one of {', '.join(self.choices)}")
        if self.from_env is not None:
            return self.from_env(raw)
        if self.kind in ("switch", "toggle"):
            return parse_bool(self.env or self.flag, raw)
        if self.kind == "list":
            return [item.strip() for item in raw.split(",") if item.strip()]
        try:
            return self.type(raw)
        except ValueError:
            what = "an integer" if self.type is int else "a number" if self.type is float else "valid"
            raise ConfigError(f"{self.env}={raw!r} is not {what}") from None

    def shown(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default == [] or self.default == ():
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, (list, tuple)):
            return ",".join(map(str, self.default))
        return str(self.default)


@dataclass(frozen=True)
class Group:
    title: str
    settings: tuple[Setting, ...]


def default_of(groups: Iterable[Group], flag: str) -> Any:
    """The declared default of a flag (not the environment's), for the settings dataclasses."""
    for group in groups:
        for s in group.settings:
            if s.flag == flag:
                return s.default
    raise KeyError(flag)


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")


def add_settings(parser: argparse.ArgumentParser, groups: Iterable[Group]) -> None:
    """The flags of these groups, their defaults read from the environment now."""
    for group in groups:
        target = parser.add_argument_group(group.title)
        for s in group.settings:
            suffix = f"env {s.env}; " if s.env else ""
            help_text = f"{s.help} ({suffix}default {s.shown()})".replace("%", "%%")
            kwargs: dict[str, Any] = {"help": help_text, "default": s.env_default(), "dest": s.name}
            if s.kind == "switch":
                kwargs["action"] = "store_true"
            elif s.kind == "toggle":
                kwargs["action"] = argparse.BooleanOptionalAction
            elif s.kind == "list":
                kwargs.update(action=_Repeat, type=s.type)
            else:
                kwargs["type"] = s.type
            if s.choices:
                kwargs["choices"] = s.choices
            if s.metavar:
                kwargs["metavar"] = s.metavar
            target.add_argument(s.flag, **kwargs)


class _Repeat(argparse.Action):
    """A repeatable flag whose first use replaces the default (argparse's append adds to it)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        seen = f"_{self.dest}_given"
        items = getattr(namespace, self.dest) if getattr(namespace, seen, False) else []
        setattr(namespace, seen, True)
        setattr(namespace, self.dest, [*items, values])


def settings_markdown(process: str, groups: Iterable[Group]) -> str:
    lines = [f"## `pipeline {process}`", ""]
    for group in groups:
        lines += [f"### {group.title}", "", "| flag | environment | default | meaning |", "|---|---|---|---|"]
        for s in group.settings:
            flag = s.flag if s.kind != "toggle" else f"{s.flag} / --no-{s.flag[2:]}"
            choices = f" (one of: {', '.join(s.choices)})" if s.choices else ""
            meaning = s.help + choices
            variable = f"`{s.env}`" if s.env else ""
            meaning = meaning.replace("|", "\\|")
            lines.append(f"| `{flag}` | {variable} | {s.shown()} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


KAFKA = Group("Kafka", (
    Setting("--kafka-bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "comma-separated host:port list",
            "127.0.0.1:9092"),
    Setting("--kafka-security-protocol", "KAFKA_SECURITY_PROTOCOL", "how clients connect", "PLAINTEXT",
            choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
    Setting("--kafka-sasl-mechanism", "KAFKA_SASL_MECHANISM",
            "with a SASL_* protocol; the user is KAFKA_SASL_USERNAME, the password KAFKA_SASL_PASSWORD or "
            "the file KAFKA_SASL_PASSWORD_FILE", "SCRAM-SHA-512", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
    Setting("--kafka-ssl-cafile", "KAFKA_SSL_CAFILE", "CA bundle that signs the brokers' certificates",
            shown_default="the system's"),
    Setting("--kafka-ssl-certfile", "KAFKA_SSL_CERTFILE", "client certificate for mutual TLS"),
    Setting("--kafka-ssl-keyfile", "KAFKA_SSL_KEYFILE", "its private key"),
    Setting("--kafka-ssl-no-check-hostname", "KAFKA_SSL_CHECK_HOSTNAME",
            "do not verify that the broker's certificate names the host dialled (KAFKA_SSL_CHECK_HOSTNAME=false); "
            "verification is on by default", False, kind="switch",
            from_env=lambda raw: raw.strip().lower() in ("0", "false", "no", "off"), shown_default="verify"),
    Setting("--topic-prefix", "TOPIC_PREFIX", "prefix of the relay topics, one per family", "notifications."),
    Setting("--topic-partitions", "TOPIC_PARTITIONS", "partitions of topics created when missing", 6, int),
))

AMQP = Group("RabbitMQ", (
    Setting("--amqp-url", "AMQP_URL",
            "amqp:// or amqps:// URL with the virtual host as its path; keep the password out of it and in "
            "AMQP_PASSWORD or the file AMQP_PASSWORD_FILE", "amqp://guest:guest@127.0.0.1:5672/",
            shown_default="amqp://guest:***@127.0.0.1:5672/"),
    Setting("--amqp-ssl-cafile", "AMQP_SSL_CAFILE", "CA bundle for amqps://", shown_default="the system's"),
    Setting("--amqp-ssl-certfile", "AMQP_SSL_CERTFILE", "client certificate for amqps://"),
    Setting("--amqp-ssl-keyfile", "AMQP_SSL_KEYFILE", "its private key"),
))

VALUE_FORMAT = Setting("--value-format", "VALUE_FORMAT",
                       "record values: Avro single-object encoding, or JSON for simple consumers", "avro",
                       choices=("avro", "json"))


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
