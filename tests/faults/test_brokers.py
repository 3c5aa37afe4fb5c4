"""Broker faults on the private stack (never the shared brokers): Kafka stopped during a relay for
long enough that thousands of notifications wait in RabbitMQ (the bridge must stop taking deliveries,
not buffer them: its RSS is sampled from /proc the whole time), then started again; RabbitMQ closing
every connection (`rabbitmqctl -n <private node> close_all_connections`) and then restarting."""
from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from tests.support.faults import RssSampler, publish_done, running, scenario
from tests.support.oslo_rabbit import ready_in_queue

from .conftest import FIGURES

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RSS_BOUND_MB = 200.0  # the bridge's resident memory while Kafka is down, whatever waits in RabbitMQ


def start_again(stack, broker: str, attempts: int = 3) -> None:
    """Start a stopped broker on its ports; another process may hold one of them for a moment
    (Kafka then exits with "fatal error while waiting for all of the SocketServer Acceptors")."""
    for attempt in range(attempts):
        try:
            stack.start(broker)
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(3)


# After a restart the broker may reject the idempotent producer's sequence numbers
# (OutOfOrderSequenceNumber); the bridge must renew its producer and relay everything.
def test_kafka_down_then_restarted(broker, private_stack, fleet, reference, tmp_path) -> None:
    async def fault(p, pub):
        bridge = running(p.procs, "bridge")[0]
        rss = RssSampler(bridge.pid)
        await asyncio.sleep(1.0)
        rss.sample()
        before = rss.samples[-1]
        stopping = asyncio.create_task(asyncio.to_thread(private_stack.stop, "kafka"))
        waiting = []
        while not stopping.done():
            rss.sample()
            await asyncio.sleep(0.25)
        await stopping
        down_at = time.monotonic()
        # Kafka is down: the publisher goes on, RabbitMQ holds what the bridge may not take
        # at least 15 s, and until the publisher is done (at most 60 s): the whole rest of the fleet waits
        while time.monotonic() - down_at < 15 or pub.poll() is None and time.monotonic() - down_at < 60:
            rss.sample()
            waiting.append(await ready_in_queue(p.names.queue, broker.amqp_url))
            await asyncio.sleep(0.5)
        assert bridge.alive(), bridge.tail()
        down_s = time.monotonic() - down_at
        await asyncio.to_thread(start_again, private_stack, "kafka")
        peak_waiting = max(waiting)
        assert peak_waiting >= 2000, f"only {peak_waiting} notifications waited in RabbitMQ"
        assert rss.peak < RSS_BOUND_MB, f"bridge RSS {rss.peak:.0f} MB while Kafka was down"
        return {"Kafka down s": f"{down_s:.0f} (+{time.monotonic() - down_at - down_s:.0f} s to start again)",
                "waiting in RabbitMQ (peak)": peak_waiting,
                "bridge RSS MB before/peak": f"{before:.0f}/{rss.peak:.0f} (bound {RSS_BOUND_MB:.0f})",
                "RSS samples": len(rss.samples)}

    outcome = asyncio.run(scenario(broker, tmp_path, fleet[1], reference, fault, timeout=240))
    FIGURES.append(outcome.line("Kafka down, then restarted"))
    outcome.check()


def rabbitmqctl(node: str, *args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-n", node, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rabbitmq_connections_closed_then_restarted(broker, private_stack, fleet, reference, tmp_path) -> None:
    assert broker.rabbit_node and broker.rabbit_node != "rabbit@localhost"  # never the shared node

    async def fault(p, pub):
        # The first bridge stops cleanly (SIGTERM) while the fleet is published, so most of it waits
        # in the queue (a publisher's own losses during a RabbitMQ outage are oslo's, not ours); a
        # second bridge relays it slowly (prefetch 20, linger 100 ms) and the faults hit mid-relay.
        await asyncio.sleep(1.0)
        assert await running(p.procs, "bridge")[0].stop() == 0
        await asyncio.to_thread(publish_done, pub)
        await p.bridge("--amqp-prefetch", "20", "--kafka-linger-ms", "100").wait_for("RabbitMQ connected", 60)
        await asyncio.sleep(2.0)
        rabbitmqctl(broker.rabbit_node, "close_all_connections", "fault suite")
        await asyncio.sleep(4.0)
        left = await ready_in_queue(p.names.queue, broker.amqp_url)
        await asyncio.to_thread(private_stack.stop, "rabbitmq")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(start_again, private_stack, "rabbitmq")
        bridge = running(p.procs, "bridge")[0]
        deadline = time.monotonic() + 60
        while bridge.text().count("RabbitMQ connected") < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert left > 500, f"only {left} notifications were left when RabbitMQ restarted: not mid-relay"
        return {"left in queue at restart": left,
                "bridge reconnects": bridge.text().count("RabbitMQ connected") - 1}

    outcome = asyncio.run(scenario(broker, tmp_path, fleet[1], reference, fault, rate=0, timeout=240))
    FIGURES.append(outcome.line("RabbitMQ close_all_connections, then restart"))
    outcome.check()
