"""`pipeline inspect`: decode, classify and mask notification bodies read on stdin.

One JSON object per input line, in order: the normalized event, or ``{"error": reason, "line": N}``
(N counts from 1). An empty line is an error too, so output lines match input lines one to one.
Never stops early; exit status 0 when every line was accepted, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from typing import BinaryIO

import orjson

from . import events, wire
from .config import Group, Setting, add_settings

__all__ = ["configure", "inspect_lines", "run"]


SETTINGS: tuple[Group, ...] = (
    Group("inspect", (
        Setting("--topic-prefix", "TOPIC_PREFIX", "prefix of the relay topic shown in `topic`", "notifications."),
        Setting("--max-body-bytes", "MAX_BODY_BYTES", "bodies larger than this are rejected", wire.MAX_BODY_BYTES, int),
    )),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read lines on stdin, each an AMQP body as published (oslo messagingv2 envelope or v1 bare "
        'dict) or a capture object {"exchange", "routing_key", "body"}; write one JSON line per input '
        'line: the normalized event or {"error": reason, "line": N}. Exit 1 if any line was rejected. '
        "The event type pipeline.heartbeat is rejected: it is reserved for the bridge's heartbeat records, "
        "written into every relay partition (null key, header kind: heartbeat, a Notification record "
        "whose timestamp is the time the bridge vouches for; docs/contracts.md, Heartbeats)."
    )
    add_settings(parser, SETTINGS)


def inspect_lines(source: BinaryIO, sink: BinaryIO, *, topic_prefix: str = "notifications.",
                  max_bytes: int = wire.MAX_BODY_BYTES) -> int:
    """Process every line of `source`; returns the number of rejected lines."""
    rejected = 0
    write = sink.write
    for number, line in enumerate(source, start=1):
        try:
            out = orjson.dumps(events.normalize_line(line, topic_prefix=topic_prefix, max_bytes=max_bytes))
        except wire.Rejected as exc:
            rejected += 1
            out = orjson.dumps({"error": exc.reason, "line": number})
        except Exception as exc:  # a bug must not stop the run or lose the line's slot
            rejected += 1
            out = orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}", "line": number})
        write(out)
        write(b"\n")
    return rejected


def run(args: argparse.Namespace) -> int:
    rejected = inspect_lines(
        sys.stdin.buffer,
        sys.stdout.buffer,
        topic_prefix=args.topic_prefix,
        max_bytes=args.max_body_bytes,
    )
    sys.stdout.buffer.flush()
    return 1 if rejected else 0
