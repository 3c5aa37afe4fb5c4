"""The fleet's lifecycle model: bare-metal nodes (with ports and portgroups) and Glance images living
realistic lives. Pure: a seeded RNG and a simulated clock in, notifications out, no I/O.

The clock. This is a discrete-event simulation: every node and every image is a generator that
says what it emits now and how many simulated seconds pass until its next step; a heap orders all
pending steps by simulated time. The event-time clock is the time of the step being run, so
simulated durations are exactly the ones drawn (power on 5-30 s, deploy 5-20 min, clean 10-40 min,
inspect 3-10 min, ...) whatever the output rate. How fast that clock runs against the wall clock is
the caller's choice: publishing at a fixed `--rate` makes simulated time run as fast as the fleet's
own event density allows (1,000 nodes give a few events per simulated second, so 1,000 events/s of
wall time is a few minutes of fleet life per wall second); `--clock-speed` instead paces by
simulated time. Either way timestamps only move forward and durations stay realistic.

Stopping. `close()` makes every life finish the operation it is in and start no new one, so every
operation started has its terminal event in the stream (unless the faults stage drops it). `sweep()`
then jumps the clock past every operation's deadline and has every node and image emit one more
event, so event-time watermarks pass every deadline on every partition: a missing end becomes due.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from . import payloads
from .glance import GlanceLives
from .ironic import IronicLives
from .model import (
    END,
    SETTLE_S,
    SINGLE,
    START,
    Event,
)

__all__ = ["Fleet"]


class Fleet(IronicLives, GlanceLives):
    """N nodes and M images; iterate `events()` for the notification stream in simulated-time order."""

    def __init__(self, nodes: int, images: int, *, seed: int = 0, start: datetime,
                 conductors: int = 3, think_s: float = 1800.0, keep_operations: bool = True) -> None:
        super().__init__(seed=seed, start=start, conductors=conductors, think_s=think_s,
                         keep_operations=keep_operations)
        for i in range(nodes):
            state = self.rng.choices(("new", "manageable", "available", "active"), (5, 5, 25, 65))[0]
            node = self._new_node(i, state)
            self.nodes.append(node)
            self._spawn(self._node_life(node, i, state == "new"), self.rng.uniform(0.0, think_s))
        for i in range(images):
            new = self.rng.random() < 0.3
            image = self._new_image(i, active=not new)
            self.images.append(image)
            self._spawn(self._image_life(image, i, new), self.rng.uniform(0.0, think_s))


    def sweep(self, margin_s: float = SETTLE_S) -> Iterator[Event]:
        """After the lives stopped: jump past every deadline, then one operation per node (an
        operator enables every console: `console_set`, used nowhere else, so it never supersedes an
        open operation) and one `image.update` per image. Exempt from faults."""
        self.t = max(self.t, self._horizon) + margin_s
        step = 30.0 / max(1, len(self.nodes) + len(self.images))
        for node in self.nodes:
            ctx = self._api_context()
            op = self._open("baremetal.node.console_set", node.uuid, node.uuid, exempt=True)
            self._emit("baremetal.node.console_set.start", "INFO", node.conductor,
                       payloads.node_payload("NodePayload", node), "ironic", ctx, op, START)
            self.t += step
            node.console_enabled, node.updated_at = True, self.now
            self._emit("baremetal.node.console_set.end", "INFO", node.conductor,
                       payloads.node_payload("NodePayload", node), "ironic", ctx, op, END)
        for image in self.images:
            self.t += step
            self._glance("image.update", "INFO", payloads.image_payload(image))
        out, self._out = self._out, []
        self.counts["events"] += len(out)
        yield from out

    def census(self) -> Iterator[Event]:
        """One event per node, nothing else: after a power outage the conductors' power sync finds
        every node in another power state than recorded (`power_state_corrected.success`, a single
        event with the node's full state). The benchmark's memory-at-N-nodes stage sends this."""
        step = 60.0 / max(1, len(self.nodes))
        for node in self.nodes:
            self.t += step
            previous = node.power_state
            node.power_state, node.updated_at = "power off", self.now
            self._emit("baremetal.node.power_state_corrected.success", "INFO", node.conductor,
                       payloads.node_payload("NodeCorrectedPowerStatePayload", node, from_power=previous),
                       "ironic", self._conductor_context(), None, SINGLE)
            out, self._out = self._out, []
            self.counts["events"] += 1
            yield from out
