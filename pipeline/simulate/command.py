"""`pipeline simulate`: publish the notifications of a simulated fleet of bare-metal nodes and images.

Pacing. `--rate R` sends R events per wall second (0: as fast as the output takes them); simulated
time then runs as fast as the fleet's own event density requires, and timestamps still show
realistic durations (see fleet.py). `--clock-speed S` paces by simulated time instead: S simulated
seconds per wall second (1 = real time). The closing sweep is never paced by the clock (it jumps
past every deadline on purpose).

Stopping. After `--duration` seconds or `--events` events (or on Ctrl-C / SIGTERM) no new operation
starts; the running ones finish, then the sweep moves event time past every deadline. A second
Ctrl-C stops at once (the truth file then lists the open operations with outcome null).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import (
    AMQP,
    KAFKA,
    VALUE_FORMAT,
    ConfigError,
    Group,
    Setting,
    add_settings,
    kafka_client_kwargs,
)

from . import outputs
from .faults import Faults
from .fleet import Fleet
from .model import Event

OUTPUTS = ("rabbit", "kafka", "stdout")


SETTINGS: tuple[Group, ...] = (
    Group("fleet", (
        Setting("--nodes", None, "bare-metal nodes", 1000, int),
        Setting("--images", None, "Glance images", 100, int),
        Setting("--seed", None, "the same seed gives the same fleet and events", 0, int),
        Setting("--think", None, "mean simulated idle time between a node's operations, s", 1800.0, float,
                metavar="SECONDS"),
        Setting("--start", None, "simulated start, UTC, e.g. '2026-11-22 00:00:00'", metavar="TIME", shown_default="now"),
    )),
    Group("pace and length", (
        Setting("--rate", None, "events per wall second, 0 = as fast as possible", 500.0, float),
        Setting("--clock-speed", None, "pace by simulated time instead: S simulated seconds per wall second",
                type=float, metavar="S", shown_default="off"),
        Setting("--duration", None, "wall seconds of traffic before the fleet winds down", type=float,
                metavar="SECONDS", shown_default="until --events or Ctrl-C"),
        Setting("--events", None, "events before the fleet winds down", type=int, shown_default="no limit"),
        Setting("--sweep", None, "the closing sweep that moves event time past every deadline", True, kind="toggle"),
    )),
    Group("faults (recorded in the ground truth)", (
        Setting("--loss", None, "fraction of terminal (.end/.error) events dropped", 0.0, float),
        Setting("--duplicates", None, "fraction of events sent twice, same message_id", 0.0, float),
        Setting("--reorder", None, "events may move up to WINDOW places later", 0, int, metavar="WINDOW"),
        Setting("--truth", None, "write the ground truth per operation (JSON)", type=Path, metavar="FILE"),
    )),
    Group("output", (
        Setting("--output", "SIMULATE_OUTPUT",
                "rabbit: oslo.messaging into RabbitMQ (the real path); kafka: straight to the relay topics; "
                "stdout: JSON lines", "rabbit", choices=OUTPUTS),
        Setting("--capture", None, "stdout: write capture objects {exchange, routing_key, body} instead of bare bodies",
                False, kind="switch"),
        Setting("--ironic-topic", "IRONIC_TOPIC", "Ironic's versioned_notifications_topics",
                "ironic_versioned_notifications"),
        Setting("--glance-topic", "GLANCE_TOPIC", "Glance's [oslo_messaging_notifications] topics", "notifications"),
        Setting("--quiet", None, "no progress lines, only the summary", False, kind="switch"),
        Setting("--api-port", "SIMULATE_API_PORT",
                "also answer as Ironic's and Glance's read APIs for the simulated fleet on 127.0.0.1:PORT, so "
                "`pipeline reconcile` can ask it about lost ends (the simulator's stand-in, no authentication); 0 = off",
                0, int),
        VALUE_FORMAT,
    )),
    AMQP,
    KAFKA,
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, SETTINGS)


def _start_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start {text!r}: expected a UTC time like '2026-11-22 00:00:00'") from None
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at


def _check(args: argparse.Namespace) -> None:
    if args.nodes < 0 or args.images < 0 or args.nodes + args.images == 0:
        raise ConfigError("--nodes and --images must not be negative, and not both 0")
    if args.rate < 0:
        raise ConfigError(f"--rate must be 0 (as fast as possible) or positive, not {args.rate}")
    if args.clock_speed is not None and args.clock_speed <= 0:
        raise ConfigError(f"--clock-speed must be positive, not {args.clock_speed}")
    if args.think <= 0:
        raise ConfigError(f"--think must be positive, not {args.think}")
    for name in ("duration", "events"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name} must be positive, not {value}")
    if args.truth is not None and not args.truth.parent.exists():
        raise ConfigError(f"--truth {args.truth}: directory {args.truth.parent} does not exist")


def unique_id(message_id: str) -> str:
    """The rabbit driver's `_unique_id` (32 hex digits) for the stdout and kafka outputs: derived
    from message_id so a duplicate carries the same one, as a publisher retry's does."""
    return hashlib.md5(message_id.encode()).hexdigest()


class Run:
    """One simulation: fleet -> faults -> output, paced, with progress and a summary."""

    def __init__(self, args: argparse.Namespace, output: outputs.Output) -> None:
        self.args = args
        self.output = output
        self.fleet = Fleet(args.nodes, args.images, seed=args.seed, start=_start_time(args.start),
                           think_s=args.think, keep_operations=args.truth is not None)
        self.faults = Faults(args.loss, args.duplicates, args.reorder, seed=args.seed)
        self.sent = 0
        self.sweeping = False
        self.interrupted = 0
        self.wall_start = 0.0
        self.sim_first: datetime | None = None
        self.sim_last: datetime | None = None

    def _stream(self) -> Iterator[Event]:
        yield from self.fleet.events()
        if self.args.sweep and self.interrupted < 2:
            self.sweeping = True
            yield from self.fleet.sweep()

    def interrupt(self) -> None:
        self.interrupted += 1
        self.fleet.close()
        if self.interrupted == 1:
            print("simulate: winding down (operations in progress finish); Ctrl-C again to stop now",
                  file=sys.stderr)

    async def run(self) -> None:
        args, fleet, output = self.args, self.fleet, self.output
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.interrupt)
        rate, speed = args.rate, args.clock_speed
        self.wall_start = start = time.perf_counter()
        next_progress = start + 1.0
        for event in self.faults.apply(self._stream()):
            if self.interrupted >= 2:
                break
            if self.sim_first is None:
                self.sim_first = event.timestamp
            self.sim_last = event.timestamp
            now = time.perf_counter()
            if speed is not None and not self.sweeping:
                due = start + (event.timestamp - self.sim_first).total_seconds() / speed
            elif rate > 0:
                due = start + self.sent / rate
            else:
                due = now
            if due - now > 0.002:
                await asyncio.sleep(due - now)
            elif self.sent % 256 == 0:
                await asyncio.sleep(0)  # let signals, the Kafka relay and progress in
            await output.send(event, unique_id(event.message_id))
            self.sent += 1
            if not fleet.closing and ((args.events and self.sent >= args.events)
                                      or (args.duration and now - start >= args.duration)):
                fleet.close()
            if now >= next_progress:
                next_progress = now + 1.0
                if not args.quiet:
                    self.progress(now)
        await output.close()

    def progress(self, now: float) -> None:
        elapsed = max(now - self.wall_start, 1e-9)
        c, f = self.fleet.counts, self.faults.counts
        phase = " winding down" if self.fleet.closing else ""
        phase = " sweep" if self.sweeping else phase
        print(f"simulate: {self.sent:,} sent, {self.sent / elapsed:,.0f}/s, simulated {self.sim_last} "
              f"| operations {c['started']:,} started, {c['ended'] + c['errored']:,} finished, "
              f"{f['dropped']:,} ends dropped, {f['duplicated']:,} duplicated{phase}",
              file=sys.stderr, flush=True)

    def summary(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.wall_start
        c, f = self.fleet.counts, self.faults.counts
        sim_span = (self.sim_last - self.sim_first).total_seconds() if self.sim_first and self.sim_last else 0.0
        return {
            "output": self.output.description,
            "events_sent": self.sent,
            "events_generated": c["events"],
            "wall_seconds": round(elapsed, 3),
            "rate": round(self.sent / elapsed, 1) if elapsed > 0 else 0.0,
            "simulated_start": str(self.sim_first),
            "simulated_end": str(self.sim_last),
            "simulated_seconds": round(sim_span, 3),
            "operations_started": c["started"],
            "operations_ended": c["ended"],
            "operations_errored": c["errored"],
            "operations_open": c["started"] - c["ended"] - c["errored"],
            "ends_dropped": f["dropped"],
            "ends_anonymous": c["anonymous"],
            "expected_missing_end": f["dropped"] + c["anonymous"],
            "events_duplicated": f["duplicated"],
            "events_delayed": f["delayed"],
            "send_failures": self.output.failures,
            "seed": self.args.seed,
        }

    def write_truth(self, path: Path, summary: dict[str, Any]) -> None:
        ops = self.fleet.operations
        truth = {
            "summary": summary,
            "settings": {k: getattr(self.args, k) for k in ("nodes", "images", "seed", "loss", "duplicates",
                                                             "reorder", "rate", "think")},
            "operations": [op.as_truth() for op in ops],
        }
        path.write_text(json.dumps(truth, indent=None, separators=(",", ":")) + "\n")


def _print_summary(s: dict[str, Any], truth: Path | None) -> None:
    lines = [
        f"simulate: done, {s['events_sent']:,} events to {s['output']} in {s['wall_seconds']:.1f} s "
        f"({s['rate']:,.0f}/s); simulated {s['simulated_start']} .. {s['simulated_end']} "
        f"({s['simulated_seconds'] / 3600:.2f} h)",
        f"  operations: {s['operations_started']:,} started, {s['operations_ended']:,} ended, "
        f"{s['operations_errored']:,} ended in error, {s['operations_open']:,} still open",
        f"  ground truth: {s['ends_dropped']:,} ends dropped, {s['ends_anonymous']:,} upload errors naming no "
        f"image: expect {s['expected_missing_end']:,} missing_end alerts; {s['events_duplicated']:,} events "
        f"duplicated, {s['events_delayed']:,} delayed by reordering",
    ]
    if s["send_failures"]:
        lines.append(f"  WARNING: {s['send_failures']:,} notifications failed to send (see the log above)")
    if truth is not None:
        lines.append(f"  truth per operation: {truth}")
    print("\n".join(lines), file=sys.stderr)


def make_output(args: argparse.Namespace) -> outputs.Output:
    topics = outputs.Topics(ironic=args.ironic_topic, glance=args.glance_topic)
    if args.output == "stdout":
        return outputs.StdoutOutput(topics, capture=args.capture)
    if args.output == "rabbit":
        from pipeline.config import amqp_connect_kwargs

        # the password from AMQP_PASSWORD(_FILE) as the bridge takes it; an amqps:// URL becomes
        # oslo's rabbit://...?ssl=1 with the system CAs (oslo's own [oslo_messaging_rabbit] ssl_* options
        # are not mapped)
        return outputs.RabbitOutput(outputs.oslo_url(amqp_connect_kwargs(args)["url"]), topics)
    client = kafka_client_kwargs(args)
    return outputs.KafkaOutput(client.pop("bootstrap_servers"), args.topic_prefix,
                               args.topic_partitions, args.value_format, topics, security=client)


def run(args: argparse.Namespace) -> int:
    _check(args)
    try:
        simulation = Run(args, make_output(args))
    except ValueError as exc:  # a fault fraction out of range
        raise ConfigError(str(exc)) from None

    async def main() -> None:
        api = None
        if args.api_port:
            from .api import serve

            api = await serve(simulation.fleet, args.api_port)
        try:
            await simulation.output.start()
            await simulation.run()
        finally:
            if api is not None:
                await api.cleanup()

    try:
        asyncio.run(main())
    except BrokenPipeError:
        sys.stderr.close()  # the reader of stdout went away: stop quietly
        return 0
    summary = simulation.summary()
    if args.truth is not None:
        simulation.write_truth(args.truth, summary)
    _print_summary(summary, args.truth)
    return 1 if summary["send_failures"] else 0
