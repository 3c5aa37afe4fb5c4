"""docs/settings.md is made from the settings tables; it must say what the code does."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline import config, settings_doc
from pipeline.streams import command as worker_command
from pipeline.streams.app import WorkerSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_the_settings_document_is_the_code_s() -> None:
    assert DOC.read_text() == settings_doc.settings_document(), (
        "docs/settings.md differs from the settings tables: run `python -m pipeline.settings_doc > docs/settings.md`"
    )


def test_a_changed_default_is_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above fails on a default changed in the code only (so it can fail)."""
    def changed(group: config.Group) -> config.Group:
        return config.Group(group.title, tuple(
            config.Setting(**{**s.__dict__, "default": 61.0}) if s.flag == "--lateness" else s for s in group.settings))

    monkeypatch.setattr(worker_command, "SETTINGS", tuple(map(changed, worker_command.SETTINGS)))
    assert DOC.read_text() != settings_doc.settings_document()


def test_the_worker_dataclass_defaults_are_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for group in worker_command.SETTINGS:
        for s in group.settings:
            if s.env:
                monkeypatch.delenv(s.env, raising=False)
    parser = argparse.ArgumentParser()
    config.add_settings(parser, worker_command.SETTINGS)
    args, defaults = parser.parse_args([]), WorkerSettings()
    assert (defaults.store, defaults.data_dir, defaults.lateness_s, defaults.web_port, defaults.web_enabled) == (
        args.store, args.data_dir, args.lateness, args.web_port, not args.no_web)


def test_a_repeated_flag_replaces_its_default_and_a_bad_variable_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("DEADLINES", "baremetal.node.power_set=5")
    parser = argparse.ArgumentParser()
    config.add_settings(parser, worker_command.SETTINGS)
    assert parser.parse_args([]).deadline == ["baremetal.node.power_set=5"]
    assert parser.parse_args(["--deadline", "a=1", "--deadline", "b=2"]).deadline == ["a=1", "b=2"]
    monkeypatch.setenv("WORKER_WEB_PORT", "eighty")
    with pytest.raises(config.ConfigError, match="WORKER_WEB_PORT='eighty' is not an integer"):
        config.add_settings(argparse.ArgumentParser(), worker_command.SETTINGS)
