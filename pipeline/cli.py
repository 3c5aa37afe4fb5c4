"""`pipeline`: one command, a subcommand per job. Each job lives in its own module, imported only
when it runs, and exposes `configure(parser)` and `run(args) -> exit status`."""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.config import ConfigError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "bridge": ("pipeline.bridge.command", "relay notifications from RabbitMQ (or files, or oslo's Kafka topics) into Kafka"),
    "worker": ("pipeline.streams.command", "run the stream agents and their web views"),
    "simulate": ("pipeline.simulate.command", "publish the notifications of a simulated fleet"),
    "inspect": ("pipeline.inspect", "decode and classify notification bodies read on stdin"),
    "bench": ("pipeline.bench.command", "measure the pipeline next to the raw limits of this machine"),
    "reconcile": ("pipeline.reconcile.command",
                  "ask Ironic's and Glance's APIs about lost ends and stuck nodes, and write what they answered"),
}


class _Parser(argparse.ArgumentParser):
    """Bad flags end with one line on stderr, not the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported: `pipeline inspect` need not load faust."""
    parser = _Parser(prog="pipeline", description="OpenStack notifications from RabbitMQ to Kafka, and the stream agents on them.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name, (module, summary) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).configure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = argparse.Namespace(command=command)
    try:
        args = build_parser(command).parse_args(argv)
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as exc:
        print(f"pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
