"""docs/settings.md, made from every subcommand's settings table, so the document cannot drift from
the code (`tests/unit/test_settings_docs.py` compares them). It sits above `cli` and `config`, which
therefore need not import each other."""

from __future__ import annotations

import importlib

from pipeline.cli import SUBCOMMANDS
from pipeline.config import settings_markdown


def settings_document() -> str:
    """docs/settings.md: every process's settings table, made from the declarations themselves."""
    parts = [
        "# Settings",
        "",
        "Every setting is a flag whose default comes from an environment variable (when it has one); a",
        "flag given wins over the variable. Secrets are never flags: `NAME` or the file named by `NAME_FILE`",
        "(KAFKA_SASL_PASSWORD, AMQP_PASSWORD, WEB_TOKEN). A bad value exits with one line naming the setting.",
        "",
        "This file is written by `python -m pipeline.settings_doc > docs/settings.md` from the tables in the code;",
        "`tests/unit/test_settings_docs.py` fails when the two differ.",
        "",
    ]
    for process, (module, summary) in SUBCOMMANDS.items():
        parts += [settings_markdown(process, importlib.import_module(module).SETTINGS).replace(
            f"## `pipeline {process}`\n", f"## `pipeline {process}`\n\n{summary[0].upper()}{summary[1:]}.\n", 1)]
    return "\n".join(parts).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(settings_document(), end="")
