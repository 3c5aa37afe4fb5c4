"""Kafka unreachable from the bridge for longer than a deadline (the private Kafka stopped): starts and
ends published meanwhile wait in the bridge (unconfirmed) and in RabbitMQ; once Kafka is back, no
heartbeat may vouch for a time before they are relayed, so no false missing_end or resolved_late.
The scenario and its checks are tests/support/lanes.py's, as for the stopped bridge and the backlog."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.lanes import DEADLINE_S, LATENESS_S, Lanes, no_false_alarm, running

from .conftest import FIGURES
from .test_brokers import start_again

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_kafka_unreachable_longer_than_the_deadline_raises_no_false_alarm(broker, private_stack, tmp_path) -> None:
    lanes = Lanes(broker.kafka, broker.amqp_url, str(tmp_path / "worker"))
    try:
        await running(lanes)

        async def outage(publish, ends) -> str:
            await asyncio.to_thread(private_stack.stop, "kafka")
            down = time.monotonic()
            await publish()
            await ends()
            await asyncio.sleep(max(0.0, DEADLINE_S + LATENESS_S + 5 - (time.monotonic() - down)))
            down_s = time.monotonic() - down
            await asyncio.to_thread(start_again, private_stack, "kafka")
            return f"Kafka down {down_s:.0f} s"

        line = await no_false_alarm(lanes, outage)
        FIGURES.append(f"idle lanes, Kafka unreachable: {line}")
        print("\n" + line)
        for proc in lanes.procs:
            assert proc.alive(), proc.tail(20)
    finally:
        await lanes.stop()
        await lanes.cleanup()
