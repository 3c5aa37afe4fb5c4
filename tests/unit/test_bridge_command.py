"""`pipeline bridge` settings: flags, env defaults, one-line errors with exit status 2."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bridge import command
from pipeline.bridge.sources import (
    AmqpSource,
    LinesSource,
    OsloKafkaSource,
    oslo_topic_pattern,
    parse_binding,
)
from pipeline.cli import build_parser
from pipeline.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def args_for(*argv: str):
    return build_parser("bridge").parse_args(["bridge", *argv])


def test_defaults_bind_ironic_and_glance(monkeypatch) -> None:
    monkeypatch.delenv("AMQP_BINDINGS", raising=False)
    args = args_for("--metrics-port", "0")
    settings = command.settings_from_args(args)
    source = command.source_from_args(args, settings)
    assert isinstance(source, AmqpSource)
    assert source.settings.queue == "kafka-bridge"
    assert source.settings.bindings == (("ironic", "ironic_versioned_notifications.*"), ("glance", "notifications.*"))
    assert source.settings.exchange_durable is False  # oslo's amqp_durable_queues default
    assert settings.max_in_flight == source.settings.prefetch == 1000
    assert settings.topic_prefix == "notifications."


def test_bindings_from_flags_and_env(monkeypatch) -> None:
    args = args_for("--amqp-binding", "nova:versioned_notifications.*", "--amqp-binding", "ironic:x.info")
    source = command.source_from_args(args, command.settings_from_args(args))
    assert source.settings.bindings == (("nova", "versioned_notifications.*"), ("ironic", "x.info"))
    monkeypatch.setenv("AMQP_BINDINGS", "a:b.*, c:d.error")
    args = args_for()
    source = command.source_from_args(args, command.settings_from_args(args))
    assert source.settings.bindings == (("a", "b.*"), ("c", "d.error"))


def test_other_sources() -> None:
    for spec, cls in (("-", LinesSource), (f"file:{__file__}", LinesSource), ("oslo-kafka:notifications", OsloKafkaSource)):
        args = args_for("--source", spec)
        assert isinstance(command.source_from_args(args, command.settings_from_args(args)), cls)


@pytest.mark.parametrize("bad", ["nope", "ironic", ":x", "ironic:"])
def test_bad_binding(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_binding(bad)


def test_oslo_topic_pattern() -> None:
    pattern = re.compile(oslo_topic_pattern(("ironic_versioned_notifications", "notifications")))
    for topic in ("notifications.info", "notifications.error", "ironic_versioned_notifications.warn",
                  "notifications.sample", "notifications.info.myvhost"):
        assert pattern.match(topic), topic
    for topic in ("notifications", "notifications.verbose", "xnotifications.info", "notifications.deadletter",
                  "notifications.baremetal.node"):
        assert not pattern.match(topic), topic


@pytest.mark.parametrize("argv, needle", [
    (["--topic-partitions", "0"], "--topic-partitions"),
    (["--source", "carrier-pigeon"], "--source"),
    (["--amqp-binding", "nobinding"], "EXCHANGE:ROUTING_KEY"),
    (["--metrics-port", "70000"], "--metrics-port"),
    (["--kafka-compression", "zstd"], "cramjam"),
    (["--source", "file:/nonexistent/dir/x.jsonl", "--metrics-port", "0"], "x.jsonl"),
])
def test_bad_settings_exit_2_with_one_line(argv: list[str], needle: str) -> None:
    try:
        import cramjam  # noqa: F401
        if needle == "cramjam":
            pytest.skip("cramjam is installed here, so zstd is a valid choice")
    except ImportError:
        pass
    proc = subprocess.run([sys.executable, "-m", "pipeline", "bridge", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
